package mtls

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	f, err := WriteTestCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files Files
		ok    bool
	}{
		{"complete", f, true},
		{"no CA", Files{CertFile: f.CertFile, KeyFile: f.KeyFile}, false},
		{"CA without certificate", Files{CertFile: f.CertFile, KeyFile: f.KeyFile, CAFile: junk}, false},
		{"missing key", Files{CertFile: f.CertFile, KeyFile: filepath.Join(dir, "none"), CAFile: f.CAFile}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client, err := Load(tt.files)
			if !tt.ok {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err = %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if server.ClientAuth != tls.RequireAndVerifyClientCert || len(client.Certificates) != 1 || client.RootCAs == nil {
				t.Fatal("configs do not enforce mutual TLS")
			}
		})
	}
	if c, err := LoadClient(Files{CAFile: f.CAFile}); err != nil || len(c.Certificates) != 0 {
		t.Fatalf("CA-only client config: %v", err)
	}
	if !f.Enabled() || (Files{}).Enabled() {
		t.Fatal("Enabled is wrong")
	}
}
