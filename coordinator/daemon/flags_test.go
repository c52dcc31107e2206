package daemon

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("file-secret-0123456789-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	cfgFile := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgFile, []byte("id: from-file\ndata-dir: "+dir+"\nbootstrap: true\njoin: [x:1, y:2]\nraft-election-timeout: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("id: a\nnot-a-flag: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TANDEM_CLUSTER_SECRET": "env-secret-0123456789-0123456789", "TANDEM_ADMIN_TOKEN": "tok", "TANDEM_GOSSIP_KEY": key}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		args    []string
		wantErr error
		check   func(t *testing.T, o *Options)
	}{
		{
			name: "join node",
			args: []string{"--id", "c1", "--data-dir", dir, "--join", "a:1,b:2", "--grpc-addr", "127.0.0.1:7001", "--gossip-addr", "127.0.0.1:7201"},
			check: func(t *testing.T, o *Options) {
				got := []any{o.Config.NodeID, o.Join, o.Config.GRPCAdvertise, o.Config.Gossip.BindPort, string(o.Config.ClusterSecret), o.AdminToken, len(o.Config.Gossip.SecretKey)}
				want := []any{"c1", []string{"a:1", "b:2"}, "127.0.0.1:7001", 7201, "env-secret-0123456789-0123456789", "tok", 16}
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			},
		},
		{
			name: "secret from file wins",
			args: []string{"--id", "c0", "--data-dir", dir, "--bootstrap", "--cluster-secret-file", secretFile},
			check: func(t *testing.T, o *Options) {
				if string(o.Config.ClusterSecret) != "file-secret-0123456789-0123456789" || !o.Config.Bootstrap {
					t.Errorf("secret %q bootstrap %v", o.Config.ClusterSecret, o.Config.Bootstrap)
				}
			},
		},
		{
			name: "config file, command line wins",
			args: []string{"--config", cfgFile, "--id", "from-flag"},
			check: func(t *testing.T, o *Options) {
				got := []any{o.Config.NodeID, o.Config.Bootstrap, o.Join, o.Config.Raft.ElectionTimeout.String()}
				want := []any{"from-flag", true, []string{"x:1", "y:2"}, "2s"}
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			},
		},
		{name: "config file with unknown key", args: []string{"--config=" + badCfg}, wantErr: ErrUsage},
		{name: "missing config file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, wantErr: ErrUsage},
		{name: "missing id", args: []string{"--data-dir", dir}, wantErr: ErrUsage},
		{name: "unknown flag", args: []string{"--id", "x", "--data-dir", dir, "--bogus"}, wantErr: ErrUsage},
		{name: "stray argument", args: []string{"--id", "x", "--data-dir", dir, "extra"}, wantErr: ErrUsage},
		{name: "bad gossip addr", args: []string{"--id", "x", "--data-dir", dir, "--gossip-addr", "nope"}},
		{name: "missing secret file", args: []string{"--id", "x", "--data-dir", dir, "--cluster-secret-file", filepath.Join(dir, "none")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Parse(tt.args, io.Discard, getenv)
			if tt.check == nil {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
