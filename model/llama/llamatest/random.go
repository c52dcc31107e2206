// Package llamatest builds small Llama models with random weights, for tests
// and benchmarks that need a model of a given shape but not a trained one.
package llamatest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/model/llama"
)

// Tensor is one stored tensor.
type Tensor struct {
	Type quant.Type
	Dims []uint64
	Data []byte
}

// Source is an in-memory llama.TensorSource.
type Source map[string]Tensor

var _ llama.TensorSource = Source(nil)

// LookupTensor implements llama.TensorSource.
func (s Source) LookupTensor(name string) (quant.Type, []uint64, []byte, bool) {
	t, ok := s[name]
	return t.Type, t.Dims, t.Data, ok
}

// TinyConfig is a 2-layer GQA model small enough for unit tests.
func TinyConfig() llama.Config {
	return llama.Config{
		Name: "tiny", Layers: 2, Embd: 64, FF: 128, Heads: 4, KVHeads: 2, HeadDim: 16,
		Vocab: 96, ContextLength: 512, RoPEBase: 10000, RoPEDims: 16, RoPEFreqScale: 1,
		RoPEInterleaved: true, NormEps: 1e-5,
	}
}

// Random returns weights for cfg drawn from a fixed seed: matrices in type t
// (F32 when t is F32), norms F32 around 1, and a separate output matrix unless
// tied. Values are scaled like a trained model's (about 1/sqrt(fan-in)) so
// activations stay in a realistic range through many layers.
func Random(cfg llama.Config, t quant.Type, seed uint64, tied bool) (Source, error) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	src := Source{}
	matrix := func(name string, rows, cols int) error {
		vals := make([]float32, rows*cols)
		scale := 1 / float32(cols)
		scale = float32(math.Sqrt(float64(scale)))
		for i := range vals {
			vals[i] = float32(rng.NormFloat64()) * scale
		}
		rb := t.RowBytes(cols)
		if rb < 0 {
			return fmt.Errorf("llamatest: %v cannot hold rows of %d values", t, cols)
		}
		data := make([]byte, rb*rows)
		if err := quant.Quantize(t, vals, data); err != nil {
			return fmt.Errorf("llamatest: %s: %w", name, err)
		}
		src[name] = Tensor{Type: t, Dims: []uint64{uint64(cols), uint64(rows)}, Data: data}
		return nil
	}
	vector := func(name string, n int) error {
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = 1 + 0.1*float32(rng.NormFloat64())
		}
		data := make([]byte, 4*n)
		if err := quant.Quantize(quant.F32, vals, data); err != nil {
			return err
		}
		src[name] = Tensor{Type: quant.F32, Dims: []uint64{uint64(n)}, Data: data}
		return nil
	}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	errs := []error{
		matrix("token_embd.weight", cfg.Vocab, cfg.Embd),
		vector("output_norm.weight", cfg.Embd),
	}
	if !tied {
		errs = append(errs, matrix("output.weight", cfg.Vocab, cfg.Embd))
	}
	for i := 0; i < cfg.Layers; i++ {
		p := fmt.Sprintf("blk.%d.", i)
		errs = append(errs,
			vector(p+"attn_norm.weight", cfg.Embd),
			matrix(p+"attn_q.weight", qDim, cfg.Embd),
			matrix(p+"attn_k.weight", kvDim, cfg.Embd),
			matrix(p+"attn_v.weight", kvDim, cfg.Embd),
			matrix(p+"attn_output.weight", cfg.Embd, qDim),
			vector(p+"ffn_norm.weight", cfg.Embd),
			matrix(p+"ffn_gate.weight", cfg.FF, cfg.Embd),
			matrix(p+"ffn_up.weight", cfg.FF, cfg.Embd),
			matrix(p+"ffn_down.weight", cfg.Embd, cfg.FF),
		)
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return src, nil
}

func sqrt(x float64) float64 {

	if x <= 0 {
		return 0
	}
	z := x
	for i := 0; i < 30; i++ {
		z = (z + x/z) / 2
	}
	return z
}
