package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
)

func TestRunEngineBenchReport(t *testing.T) {
	m := tiny(t)
	opts := engine.DefaultBenchOptions()
	opts.Concurrency = []int{1, 4}
	opts.DecodeTokens, opts.PromptTokens, opts.TTFTPromptTokens = 8, 6, 201
	opts.Runs, opts.BlockSize, opts.ModelID = 1, 4, "tiny"
	opts.Scheduler = scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 64}
	rep, err := engine.RunEngineBench(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Batch) != 2 || rep.Batch[0].Seqs != 1 || rep.Batch[1].Seqs != 4 {
		t.Fatalf("batch results %+v, want seqs 1 and 4", rep.Batch)
	}
	for _, b := range rep.Batch {
		if !(b.DecodeTokensPerS > 0) || len(b.RunsTokensPerS) != 1 {
			t.Errorf("batch %d: %+v", b.Seqs, b)
		}
	}
	if rep.Batch[0].SpeedupVsBatch1 != 1 {
		t.Errorf("batch-1 speedup %v, want 1", rep.Batch[0].SpeedupVsBatch1)
	}
	pc := rep.PrefixCache
	// 201 tokens: 50 full blocks of 4 may be reused, the last token is not.
	if pc.PromptTokens != 201 || pc.CachedTokens != 200 {
		t.Errorf("prefix cache %+v, want 200 of 201 tokens cached", pc)
	}
	if !(pc.ColdTTFTMs > 0 && pc.CachedTTFTMs > 0 && pc.Speedup > 1) {
		t.Errorf("prefix cache timings %+v: a cached prompt must be faster", pc)
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"batch":[{"seqs":1,"decode_tokens_per_s":`, `"cold_ttft_ms"`, `"cached_ttft_ms"`} {
		if !strings.Contains(string(js), key) {
			t.Errorf("JSON %s lacks %s", js, key)
		}
	}
}

func TestRunEngineBenchRejects(t *testing.T) {
	m := tiny(t)
	tests := []struct {
		name string
		edit func(o *engine.BenchOptions)
	}{
		{"no runs", func(o *engine.BenchOptions) { o.Runs = 0 }},
		{"one decode token", func(o *engine.BenchOptions) { o.DecodeTokens = 1 }},
		{"prompt beyond context", func(o *engine.BenchOptions) { o.TTFTPromptTokens = 4096 }},
		{"zero concurrency", func(o *engine.BenchOptions) { o.Concurrency = []int{0} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := engine.DefaultBenchOptions()
			o.TTFTPromptTokens, o.Runs = 100, 1
			tc.edit(&o)
			if _, err := engine.RunEngineBench(context.Background(), m, o); !errors.Is(err, engine.ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// BenchmarkEngine runs the engine benchmark on $TANDEM_MODEL and reports the
// batch-16 decode rate, its speedup over batch 1 and the prefix-cache TTFT
// speedup. `tandem bench engine` prints the full report.
func BenchmarkEngine(b *testing.B) {
	m := openReal(b)
	opts := engine.DefaultBenchOptions()
	opts.Concurrency = []int{1, 16}
	opts.Runs, opts.DecodeTokens, opts.ModelID = 1, 32, m.ID
	opts.KVDType = kernels.KVF16
	var rep engine.BenchReport
	for b.Loop() {
		var err error
		if rep, err = engine.RunEngineBench(context.Background(), m.Llama, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(rep.Batch[0].DecodeTokensPerS, "batch1_tok/s")
	b.ReportMetric(rep.Batch[1].DecodeTokensPerS, "batch16_tok/s")
	b.ReportMetric(rep.Batch[1].SpeedupVsBatch1, "batch16_speedup")
	b.ReportMetric(rep.PrefixCache.Speedup, "ttft_speedup")
}
