package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A tiny run must produce every figure the JSON report promises.
func TestRun_ReportsEveryFigure(t *testing.T) {
	opts := DefaultOptions()
	opts.Sizes, opts.Runs, opts.MinTime = []int{16 << 10, 1 << 20}, 1, time.Millisecond
	rep, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"grpc_gbps", "tcp_gbps", "shm_gbps", "memcpy_gbps", "kv_1024_tokens_ms", "grpc_mtls_gbps", "kv_1024_tokens_shm_ms"} {
		if v, ok := fields[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, fields[k])
		}
	}
	if rep.KVBytes != 23592960 {
		t.Errorf("KV of 1,024 SmolLM2 tokens = %d bytes, want 23592960", rep.KVBytes)
	}
}

func TestOptions_Validate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Options)
	}{
		{"size not a block multiple", func(o *Options) { o.Sizes = []int{1000} }},
		{"no sizes", func(o *Options) { o.Sizes = nil }},
		{"no runs", func(o *Options) { o.Runs = 0 }},
		{"tiny chunk", func(o *Options) { o.ChunkBytes = 10 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.mutate(&o)
			if o.Validate() == nil {
				t.Fatal("Validate accepted bad options")
			}
		})
	}
}
