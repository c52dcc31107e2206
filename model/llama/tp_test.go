package llama_test

import (
	"bytes"
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
			shards, err := tp.NewKVCache(8, blockSize, kernels.KVF16)
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

// A sharded cache's blocks read as an unsharded cache's: layer 0's keys and
// values do not depend on the all-reduce, so after the same prompt the two
// caches hold identical bytes there, in both KV formats.
func TestShardedKVCacheMatchesUnsharded(t *testing.T) {
	for _, dtype := range []kernels.KVDType{kernels.KVF16, kernels.KVInt8} {
		t.Run(dtype.String(), func(t *testing.T) {
			cfg := llamatest.TinyConfig()
			src, err := llamatest.Random(cfg, quant.Q8_0, 5, true)
			if err != nil {
				t.Fatal(err)
			}
			single, err := llama.New(cfg, ref.New(), src)
			if err != nil {
				t.Fatal(err)
			}
			tp := newTP(t, cfg, src, 2)
			one, err := single.NewKVCache(4, blockSize, dtype)
			if err != nil {
				t.Fatal(err)
			}
			sharded, err := tp.NewKVCache(4, blockSize, dtype)
			if err != nil {
				t.Fatal(err)
			}
			if one.Spec() != sharded.Spec() {
				t.Fatalf("specs differ: %+v vs %+v", one.Spec(), sharded.Spec())
			}
			b := batchOf([]*seq{{tokens: prompt, blocks: []int32{0, 1, 2}}}, []int{0})
			if _, err := single.Forward(context.Background(), one, b, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := tp.Forward(context.Background(), sharded, b, nil); err != nil {
				t.Fatal(err)
			}
			n := one.Spec().BlockBytes()
			want, got := make([]byte, n), make([]byte, n)
			for blk := 0; blk < 3; blk++ {
				if err := one.ReadBlock(0, blk, want); err != nil {
					t.Fatal(err)
				}
				if err := sharded.ReadBlock(0, blk, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(want, got) {
					t.Fatalf("block %d of layer 0 differs between the sharded and the unsharded cache", blk)
				}
			}
			// Writing whole-model bytes and reading them back is the identity.
			for i := range want {
				want[i] = byte(i * 7)
			}
			if err := sharded.WriteBlock(1, 3, want); err != nil {
				t.Fatal(err)
			}
			if err := sharded.ReadBlock(1, 3, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, got) {
				t.Fatal("WriteBlock then ReadBlock changed the bytes")
			}
			if err := sharded.ReadBlock(0, 0, got[:1]); err == nil {
				t.Fatal("ReadBlock into a short buffer succeeded")
			}
		})
	}
}
