package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.yaml", "model: /m.gguf\nblocks: 77\ndecode_workers: [a:1, b:2]\nmode: colocated\nkv_insecure: true\ncoordinators: [c:7000]\n")
	unknown := file("unknown.yaml", "modle: /m.gguf\n")
	cases := []struct {
		name    string
		args    []string
		want    func(c *serveConfig)
		wantErr bool
	}{
		{name: "flags only", args: []string{"--blocks", "9"}, want: func(c *serveConfig) { c.Blocks = 9 }},
		{name: "file", args: []string{"--config", good}, want: func(c *serveConfig) {
			c.Model, c.Blocks, c.DecodeWorkers, c.Mode, c.KVInsecure = "/m.gguf", 77, []string{"a:1", "b:2"}, "colocated", true
			c.Coordinators = []string{"c:7000"}
		}},
		{name: "flags win over the file", args: []string{"--blocks", "5", "--config", good, "--mode=disaggregated", "--kv-insecure=false"}, want: func(c *serveConfig) {
			c.Model, c.Blocks, c.DecodeWorkers, c.Mode = "/m.gguf", 5, []string{"a:1", "b:2"}, "disaggregated"
			c.Coordinators = []string{"c:7000"}
		}},
		{name: "unknown key", args: []string{"--config", unknown}, wantErr: true},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, wantErr: true},
		{name: "bad flag", args: []string{"--no-such-flag"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defaultServeConfig()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			config := cfg.registerCommon(fs)
			cfg.registerWorker(fs)
			cfg.registerGateway(fs)
			err := parseServe(fs, &cfg, config, tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			want := defaultServeConfig()
			want.Listen, want.HTTPListen, want.GRPCListen, want.GossipListen = "127.0.0.1:0", "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:0"
			tc.want(&want)
			if diff := cmp.Diff(want, cfg, cmp.AllowUnexported(serveConfig{})); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, "long")
	os.WriteFile(long, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tiny"), 0o600)
	cases := []struct {
		name, file, env string
		wantErr         bool
	}{
		{name: "file", file: long},
		{name: "env", env: "0123456789abcdef0123456789abcdef-env"},
		{name: "short file", file: short, wantErr: true},
		{name: "missing file", file: filepath.Join(dir, "none"), wantErr: true},
		{name: "nothing", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TANDEM_CLUSTER_SECRET", tc.env)
			c := defaultServeConfig()
			c.ClusterSecretFile = tc.file
			err := c.loadSecret()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && len(c.secret()) < 32 {
				t.Errorf("secret %q", c.secret())
			}
		})
	}
}
