package cuda_test

import (
	"context"
	"fmt"
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
	b, err := cuda.New(cuda.Config{LibPath: os.Getenv("TANDEM_CUDA_LIB"), Activations: kernels.ActQ8})
	if err != nil {
		t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// decode runs prompt then steps decode steps on m, one sequence, and returns
// every step's logits and the tokens fed back: the argmax (greedy), or
// forced[i] when forced is given, so that two backends can be compared on the
// same token sequence even past a near-tie.
func decode(t *testing.T, m *llama.Model, dtype kernels.KVDType, prompt []int32, steps int, forced []int32) ([][]float32, []int32) {
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
		next := argmax(logits)
		if forced != nil {
			next = forced[len(all)]
		}
		all = append(all, logits)
		tokens = append(tokens, next)
	}
	return all, tokens[len(prompt):]
}

// margin is the gap between the two largest logits.
func margin(v []float32) float64 {
	a, b := math.Inf(-1), math.Inf(-1)
	for _, x := range v {
		switch f := float64(x); {
		case f > a:
			a, b = f, a
		case f > b:
			b = f
		}
	}
	return a - b
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

// TestGPUModelMatchesRef decodes with random-weight models on the GPU and
// on the CPU backends. The GPU quantizes activations exactly as the
// pure-Go reference does, so only float summation order separates them; the
// SIMD CPU backend rounds differently (about 2% of the logit range on these
// tiny random models), hence its looser bound. Greedy tokens must agree
// wherever the reference's top two logits are further apart than the
// tolerance; past a near-tie both runs follow the reference's tokens.
func TestGPUModelMatchesRef(t *testing.T) {
	g := gpu(t)
	prompt := []int32{5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71, 2, 8}
	for _, tc := range []struct {
		typ   quant.Type
		tied  bool
		dtype kernels.KVDType
		// mixed: a Q4_K_M file. Typ Q4_K: with Q6_K and Q5_K matrices
		// (kquantMixed); typ Q5_0: SmolLM2's 576-wide rows, Q5_0 and Q8_0
		// beside Q4_K and Q6_K (smolMixed).
		mixed bool
	}{{quant.Q4_1, true, kernels.KVF16, false}, {quant.Q4_0, false, kernels.KVF16, false}, {quant.Q8_0, true, kernels.KVF16, false},
		{quant.Q5_0, true, kernels.KVF16, false}, {quant.Q5_1, false, kernels.KVF16, false},
		{quant.Q5_0, true, kernels.KVF16, true}, {quant.Q5_0, false, kernels.KVInt8, true},
		{quant.F16, false, kernels.KVF16, false}, {quant.BF16, true, kernels.KVF16, false}, {quant.F32, false, kernels.KVF16, false},
		{quant.Q4_1, true, kernels.KVInt8, false},
		{quant.Q4_K, true, kernels.KVF16, false}, {quant.Q5_K, false, kernels.KVF16, false}, {quant.Q6_K, true, kernels.KVF16, false},
		{quant.Q4_K, false, kernels.KVInt8, false}, {quant.Q4_K, false, kernels.KVF16, true}, {quant.Q4_K, true, kernels.KVInt8, true}} {
		name := tc.typ.String()
		if tc.mixed {
			name = "Q4_K_M"
			if tc.typ == quant.Q5_0 {
				name = "Q4_K_M-576"
			}
		}
		t.Run(name+"/kv-"+tc.dtype.String(), func(t *testing.T) {
			cfg := llamatest.TinyConfig()
			if tc.typ == quant.Q4_K || tc.typ == quant.Q5_K || tc.typ == quant.Q6_K {
				cfg = kquantConfig()
			}
			random := llamatest.Random
			if tc.mixed {
				random = kquantMixed
				if tc.typ == quant.Q5_0 {
					cfg, random = smolConfig(), smolMixed
				}
			}
			src, err := random(cfg, tc.typ, 11, tc.tied)
			if err != nil {
				t.Fatal(err)
			}
			const steps = 8
			mr, err := llama.New(cfg, ref.NewWith(kernels.ActQ8), src)
			if err != nil {
				t.Fatal(err)
			}
			lr, want := decode(t, mr, tc.dtype, prompt, steps, nil)
			mg, err := llama.New(cfg, g, src)
			if err != nil {
				t.Fatal(err)
			}
			lg, _ := decode(t, mg, tc.dtype, prompt, steps, want)
			// The CUDA kernels round activations to 8 bits (dp4a), so they
			// are compared with the CPU backend's llama.cpp-style mode.
			ccfg := cpu.DefaultConfig()
			ccfg.Activations = kernels.ActQ8
			cb, err := cpu.New(ccfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cb.Close()
			mc, err := llama.New(cfg, cb, src)
			if err != nil {
				t.Fatal(err)
			}
			lc, _ := decode(t, mc, tc.dtype, prompt, steps, want)
			for _, o := range []struct {
				name   string
				logits [][]float32
				tol    float64
			}{{"ref", lr, 5e-3}, {"cpu", lc, 5e-2}} {
				for s := range lg {
					var scale, worst float64
					for i := range o.logits[s] {
						scale = math.Max(scale, math.Abs(float64(o.logits[s][i])))
						worst = math.Max(worst, math.Abs(float64(lg[s][i]-o.logits[s][i])))
					}
					bound := o.tol * (1 + scale)
					if worst > bound {
						t.Fatalf("vs %s, step %d: logits differ by %g (bound %g)", o.name, s, worst, bound)
					}
					if margin(o.logits[s]) > 2*bound && argmax(lg[s]) != argmax(o.logits[s]) {
						t.Fatalf("vs %s, step %d: greedy token %d, want %d", o.name, s, argmax(lg[s]), argmax(o.logits[s]))
					}
				}
			}
		})
	}
}

// kquantConfig is TinyConfig widened so that every matrix row holds whole
// 256-value K-quant blocks.
func kquantConfig() llama.Config {
	cfg := llamatest.TinyConfig()
	cfg.Embd, cfg.FF, cfg.HeadDim, cfg.RoPEDims = 256, 512, 64, 64
	return cfg
}

// kquantMixed mixes K-quant types the way llama.cpp's Q4_K_M does: base
// (Q4_K there) for most matrices, Q6_K for the output (or the tied
// embedding), one ffn_down and one attn_v, and here Q5_K for another attn_v.
func kquantMixed(cfg llama.Config, base quant.Type, seed uint64, tied bool) (llamatest.Source, error) {
	src, err := llamatest.Random(cfg, base, seed, tied)
	if err != nil {
		return nil, err
	}
	q6, err := llamatest.Random(cfg, quant.Q6_K, seed+1, tied)
	if err != nil {
		return nil, err
	}
	q5, err := llamatest.Random(cfg, quant.Q5_K, seed+2, tied)
	if err != nil {
		return nil, err
	}
	out := "output.weight"
	if tied {
		out = "token_embd.weight"
	}
	for _, name := range []string{out, "blk.0.ffn_down.weight", "blk.0.attn_v.weight"} {
		src[name] = q6[name]
	}
	src["blk.1.attn_v.weight"] = q5["blk.1.attn_v.weight"]
	return src, nil
}

// smolConfig has SmolLM2-135M's widths (576-wide rows, 1536 feed-forward,
// nine heads of 64 over three KV heads) on two layers and a small
// vocabulary.
func smolConfig() llama.Config {
	cfg := llamatest.TinyConfig()
	cfg.Embd, cfg.FF, cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.RoPEDims = 576, 1536, 9, 3, 64, 64
	return cfg
}

// smolMixed is how llama.cpp's Q4_K_M stores a model whose rows are not
// whole 256-value blocks (SmolLM2's 576): the 576-wide matrices fall back
// from Q4_K to base (Q5_0) and from Q6_K to Q8_0 (the output, or the tied
// embedding), while the ffn_down rows (1536 wide) keep Q6_K in the first
// layer and Q4_K in the others.
func smolMixed(cfg llama.Config, base quant.Type, seed uint64, tied bool) (llamatest.Source, error) {
	src, err := llamatest.Random(cfg, base, seed, tied)
	if err != nil {
		return nil, err
	}
	q8, err := llamatest.Random(cfg, quant.Q8_0, seed+1, tied)
	if err != nil {
		return nil, err
	}
	out := "output.weight"
	if tied {
		out = "token_embd.weight"
	}
	src[out] = q8[out]
	f32, err := llamatest.Random(cfg, quant.F32, seed+2, tied)
	if err != nil {
		return nil, err
	}
	for l := range cfg.Layers {
		name := fmt.Sprintf("blk.%d.ffn_down.weight", l)
		typ := quant.Q4_K
		if l == 0 {
			typ = quant.Q6_K
		}
		if src[name], err = requantize(f32[name], typ); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return src, nil
}

// requantize encodes an F32 tensor in typ.
func requantize(t llamatest.Tensor, typ quant.Type) (llamatest.Tensor, error) {
	if t.Type != quant.F32 {
		return llamatest.Tensor{}, fmt.Errorf("requantize: %v tensor, want F32", t.Type)
	}
	vals := make([]float32, len(t.Data)/4)
	if err := quant.Dequantize(quant.F32, t.Data, vals); err != nil {
		return llamatest.Tensor{}, err
	}
	data := make([]byte, len(vals)/int(t.Dims[0])*typ.RowBytes(int(t.Dims[0])))
	if err := quant.Quantize(typ, vals, data); err != nil {
		return llamatest.Tensor{}, err
	}
	return llamatest.Tensor{Type: typ, Dims: t.Dims, Data: data}, nil
}
