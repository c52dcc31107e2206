package grpcx_test

import (
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport/grpcx"
)

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*grpcx.Config)
		ok     bool
	}{
		{"insecure for tests", func(c *grpcx.Config) { c.Insecure = true }, true},
		{"no TLS files", func(c *grpcx.Config) {}, false},
		{"tiny chunk", func(c *grpcx.Config) { c.Insecure, c.MaxChunkBytes = true, 100 }, false},
		{"conn window below stream window", func(c *grpcx.Config) { c.Insecure, c.ConnWindow = true, c.StreamWindow-1 }, false},
		{"negative idle streams", func(c *grpcx.Config) { c.Insecure, c.IdleStreams = true, -1 }, false},
		{"no idle streams", func(c *grpcx.Config) { c.Insecure, c.IdleStreams = true, 0 }, true},
		{"no keepalive", func(c *grpcx.Config) { c.Insecure, c.Keepalive = true, 0*time.Second }, false},
		{"no logger", func(c *grpcx.Config) { c.Insecure, c.Logger = true, nil }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := grpcx.DefaultConfig()
			tc.mutate(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
