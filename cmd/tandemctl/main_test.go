package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/coordtest"
)

const token = "s3cret-admin-token"

func ctl(t *testing.T, c *coordtest.Cluster, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		switch k {
		case "TANDEM_COORDINATORS":
			return strings.Join(c.Addrs(), ",")
		case "TANDEM_ADMIN_TOKEN":
			return token
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := run(ctx, args, strings.NewReader(`{"prefill":{"picker":{"name":"max-score"}},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`), &out, &errOut, getenv)
	return out.String(), errOut.String(), err
}

func TestCommands(t *testing.T) {
	c := coordtest.MakeClusterOpts(t, coordtest.Options{Voters: 3, AdminToken: token})
	c.AddWorker(t, "d1", "decode", nil)
	c.AddWorker(t, "p1", "prefill", nil)
	tests := []struct {
		name string
		args []string
		want []string // substrings of stdout
	}{
		{"status", []string{"status"}, []string{"leader:", "c0", "c1", "c2", "voter"}},
		{"nodes", []string{"nodes"}, []string{"d1", "decode", "active", "cpu:test", "p1", "prefill"}},
		{"nodes by role", []string{"nodes", "--role", "prefill"}, []string{"p1"}},
		{"models set", []string{"models", "set", "m", "--block-tokens", "16"}, []string{"model m set"}},
		{"models", []string{"models"}, []string{"m", "d1", "p1"}},
		{"drain", []string{"drain", "d1"}, []string{"d1: drain"}}, // draining, or drained if idle already
		{"undrain", []string{"undrain", "d1"}, []string{"d1: active"}},
		{"policy set", []string{"policy", "set", "-"}, []string{"never-remote"}},
		{"policy get", []string{"policy", "get"}, []string{"never-remote", "# version"}},
		{"snapshot", []string{"snapshot", "save"}, []string{"snapshot", "index"}},
		{"status json", []string{"--json", "status"}, []string{`"leader_id"`, `"servers"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := ctl(t, c, nil, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v\n%s", tt.args, err, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	t.Run("nodes json parses", func(t *testing.T) {
		out, _, err := ctl(t, c, nil, "--json", "nodes")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Nodes []struct {
				Info struct {
					ID string `json:"id"`
				} `json:"info"`
				State string `json:"state"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(v.Nodes) < 5 {
			t.Fatalf("%d nodes in JSON, want 3 coordinators + 2 workers", len(v.Nodes))
		}
	})
}

func TestErrors(t *testing.T) {
	c := coordtest.MakeClusterOpts(t, coordtest.Options{Voters: 1, AdminToken: token})
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
		usage   bool
	}{
		{"wrong token", map[string]string{"TANDEM_ADMIN_TOKEN": "nope"}, []string{"status"}, "refused our credentials", false},
		{"wrong token file", nil, []string{"--token-file", tokFile, "drain", "x"}, "refused our credentials", false},
		{"unreachable", map[string]string{"TANDEM_COORDINATORS": "127.0.0.1:1"}, []string{"--timeout", "300ms", "status"}, "cannot reach a coordinator", false},
		{"unknown node", nil, []string{"drain", "ghost"}, "not found", false},
		{"unknown command", nil, []string{"frobnicate"}, "", true},
		{"missing arg", nil, []string{"drain"}, "", true},
		{"bad policy", nil, []string{"policy", "set", filepath.Join(dir, "missing.json")}, "reading policy", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ctl(t, c, tt.env, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.usage != errors.Is(err, errUsage) {
				t.Fatalf("usage error = %v, want %v (%v)", errors.Is(err, errUsage), tt.usage, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q lacks %q", err, tt.wantErr)
			}
		})
	}
}
