package llama_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/comm"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

func newTP(t *testing.T, cfg llama.Config, src llamatest.Source, n int) *llama.TP {
	t.Helper()
	bes := make([]kernels.Backend, n)
	for i := range bes {
		bes[i] = ref.New()
	}
	comms, err := comm.NewGroup(bes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	tp, err := llama.NewTP(cfg, bes, comms, src)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// Tensor parallelism splits each reduction in two and adds the halves, so
// logits match the single-rank model to float32 rounding and greedy decoding
// picks the same tokens.
func TestTensorParallelMatchesSingleRank(t *testing.T) {
	for _, wt := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_1} {
		t.Run(wt.String(), func(t *testing.T) {
			cfg := llamatest.TinyConfig()
			src, err := llamatest.Random(cfg, wt, 3, false)
			if err != nil {
				t.Fatal(err)
			}
			single, err := llama.New(cfg, ref.New(), src)
			if err != nil {
				t.Fatal(err)
			}
			tp := newTP(t, cfg, src, 2)
			if got := tp.Rank(1).Config().KVHeads; got != cfg.KVHeads/2 {
				t.Fatalf("rank KV heads = %d, want %d", got, cfg.KVHeads/2)
			}
			one := newCache(t, single, 8, kernels.KVF16)
			shards, err := tp.NewKVCaches(8, blockSize, kernels.KVF16)
			if err != nil {
				t.Fatal(err)
			}
			s := &seq{tokens: append([]int32(nil), prompt...), blocks: []int32{0, 1, 2, 3, 4, 5}}
			done := 0
			for step := 0; step < 8; step++ {
				b := batchOf([]*seq{s}, []int{done})
				want, err := single.Forward(context.Background(), one, b, nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tp.Forward(context.Background(), shards, b, nil)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxDiff(want, got); d > 1e-3 {
					t.Fatalf("step %d: TP=2 logits differ from TP=1 by %g", step, d)
				}
				wantTok, gotTok := argmax(want), argmax(got)
				if wantTok != gotTok {
					t.Fatalf("step %d: greedy token %d with TP=2, %d with TP=1", step, gotTok, wantTok)
				}
				done = len(s.tokens)
				s.tokens = append(s.tokens, wantTok)
			}
		})
	}
}

func TestTensorParallelRejectsUnevenSplit(t *testing.T) {
	cfg := llamatest.TinyConfig()
	src, err := llamatest.Random(cfg, quant.F32, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	bes := []kernels.Backend{ref.New(), ref.New(), ref.New()}
	comms, err := comm.NewGroup(bes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := llama.NewTP(cfg, bes, comms, src); !errors.Is(err, llama.ErrTPShape) {
		t.Fatalf("NewTP with 3 ranks = %v, want ErrTPShape", err)
	}
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}
