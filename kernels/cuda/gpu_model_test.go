package cuda_test

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cpu"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

// This external test package runs whole random-weight models on the GPU
// and on the reference backend; it is the only place kernels/cuda code meets
// model/llama, and only in tests.

const blockSize = 16

func gpu(t testing.TB) *cuda.Backend {
	t.Helper()
	if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
		t.Skip("GPU test: set TANDEM_CUDA_TESTS=1 on a CUDA host")
	}
	b, err := cuda.New(cuda.Config{LibPath: os.Getenv("TANDEM_CUDA_LIB")})
	if err != nil {
		t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// greedy runs prompt then steps greedy decode steps on m, one sequence, and
// returns every step's logits and the chosen tokens.
func greedy(t *testing.T, m *llama.Model, dtype kernels.KVDType, prompt []int32, steps int) ([][]float32, []int32) {
	t.Helper()
	cfg := m.Config()
	total := len(prompt) + steps
	blocks := (total + blockSize - 1) / blockSize
	cache, err := m.Backend().NewKVCache(cfg.KVSpec(blocks, blockSize, dtype))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	table := make([]int32, blocks)
	for i := range table {
		table[i] = int32(blocks - 1 - i) // reversed: exercises the indirection
	}
	tokens := append([]int32(nil), prompt...)
	var all [][]float32
	done := 0
	for len(all) < steps {
		b := &llama.Batch{}
		for p := done; p < len(tokens); p++ {
			b.Tokens = append(b.Tokens, tokens[p])
			b.Positions = append(b.Positions, int32(p))
			b.Slots = append(b.Slots, table[p/blockSize]*blockSize+int32(p%blockSize))
		}
		b.Seqs = []kernels.AttnSeq{{QueryStart: 0, QueryLen: len(b.Tokens), KVLen: len(tokens), Blocks: table}}
		b.LogitRows = []int32{int32(len(b.Tokens) - 1)}
		logits, err := m.Forward(context.Background(), cache, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := m.Backend().(*cuda.Backend); ok {
			if err := g.Err(); err != nil {
				t.Fatal(err)
			}
		}
		done = len(tokens)
		all = append(all, logits)
		tokens = append(tokens, argmax(logits))
	}
	return all, tokens[len(prompt):]
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

func TestGPUModelMatchesRef(t *testing.T) {
	g := gpu(t)
	prompt := []int32{5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71, 2, 8}
	for _, tc := range []struct {
		typ   quant.Type
		tied  bool
		dtype kernels.KVDType
	}{{quant.Q4_1, true, kernels.KVF16}, {quant.Q4_0, false, kernels.KVF16}, {quant.Q8_0, true, kernels.KVF16},
		{quant.F16, false, kernels.KVF16}, {quant.BF16, true, kernels.KVF16}, {quant.F32, false, kernels.KVF16},
		{quant.Q4_1, true, kernels.KVInt8}} {
		t.Run(tc.typ.String()+"/kv-"+tc.dtype.String(), func(t *testing.T) {
			cfg := llamatest.TinyConfig()
			src, err := llamatest.Random(cfg, tc.typ, 11, tc.tied)
			if err != nil {
				t.Fatal(err)
			}
			mg, err := llama.New(cfg, g, src)
			if err != nil {
				t.Fatal(err)
			}
			cb, err := cpu.New(cpu.DefaultConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cb.Close()
			const steps = 8
			lg, tg := greedy(t, mg, tc.dtype, prompt, steps)
			// The GPU must agree with the pure-Go reference and with the
			// SIMD CPU backend the cluster runs elsewhere.
			for _, other := range []kernels.Backend{ref.New(), cb} {
				mo, err := llama.New(cfg, other, src)
				if err != nil {
					t.Fatal(err)
				}
				lo, to := greedy(t, mo, tc.dtype, prompt, steps)
				for s := range lo {
					var scale, worst float64
					for i := range lo[s] {
						scale = math.Max(scale, math.Abs(float64(lo[s][i])))
						worst = math.Max(worst, math.Abs(float64(lg[s][i]-lo[s][i])))
					}
					if worst > 1e-2*(1+scale) {
						t.Fatalf("vs %s, step %d: logits differ by %g (scale %g)", other.Name(), s, worst, scale)
					}
				}
				for i := range to {
					if tg[i] != to[i] {
						t.Fatalf("greedy tokens differ: gpu %v, %s %v", tg, other.Name(), to)
					}
				}
			}
		})
	}
}
