package transport_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

func TestReceiverConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*transport.ReceiverConfig)
	}{
		{"short secret", func(c *transport.ReceiverConfig) { c.Secret = []byte("x") }},
		{"zero lease TTL", func(c *transport.ReceiverConfig) { c.LeaseTTL = 0 }},
		{"negative tombstone TTL", func(c *transport.ReceiverConfig) { c.TombstoneTTL = -time.Second }},
		{"max blocks above pool", func(c *transport.ReceiverConfig) { c.MaxBlocks = c.Local.Spec.Blocks + 1 }},
		{"no clock", func(c *transport.ReceiverConfig) { c.Clock = nil }},
		{"no logger", func(c *transport.ReceiverConfig) { c.Logger = nil }},
		{"no model id", func(c *transport.ReceiverConfig) { c.Local.ModelID = "" }},
		{"bad spec", func(c *transport.ReceiverConfig) { c.Local.Spec.HeadDim = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("d", transporttest.Spec()))
			cfg.Secret = transporttest.Secret
			if err := cfg.Validate(); err != nil {
				t.Fatalf("defaults invalid: %v", err)
			}
			tc.mutate(&cfg)
			if err := cfg.Validate(); !errors.Is(err, transport.ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestNewReceiver_MemoryMustMatch(t *testing.T) {
	spec := transporttest.Spec()
	cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("d", spec))
	cfg.Secret = transporttest.Secret
	other := spec
	other.Blocks = 8
	mem, err := transport.NewHostMemory(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := transport.NewReceiver(cfg, mem, transporttest.NewAllocator(8)); !errors.Is(err, transport.ErrInvalid) {
		t.Fatalf("NewReceiver with a smaller memory = %v, want ErrInvalid", err)
	}
}

func TestTLSConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	pki, err := transporttest.NewPKI(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.Issue("node")
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*transport.TLSConfig)
	}{
		{"missing key file name", func(c *transport.TLSConfig) { c.KeyFile = "" }},
		{"absent CA", func(c *transport.TLSConfig) { c.CAFile = filepath.Join(dir, "nope.pem") }},
		{"CA without certificates", func(c *transport.TLSConfig) { c.CAFile = empty }},
		{"key does not match", func(c *transport.TLSConfig) { c.KeyFile = empty }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			if _, err := c.Server(); err == nil {
				t.Error("Server() accepted a broken TLS config")
			}
			if _, err := c.Client(); err == nil {
				t.Error("Client() accepted a broken TLS config")
			}
		})
	}
	srv, err := good.Server()
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth.String() != "RequireAndVerifyClientCert" {
		t.Errorf("server ClientAuth = %v, want RequireAndVerifyClientCert", srv.ClientAuth)
	}
}
