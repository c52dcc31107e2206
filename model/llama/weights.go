package llama

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// TensorSource yields a model's tensors by GGUF name: the element type, the
// dimensions in ggml order (ne[0] is the contiguous one) and the raw bytes.
// A GGUF file is one; tests build models from maps.
type TensorSource interface {
	LookupTensor(name string) (t quant.Type, dims []uint64, data []byte, ok bool)
}

// New binds the weights of a model with architecture cfg from src onto be.
// Weights are bound by their GGUF names (token_embd.weight,
// blk.N.attn_q.weight, ...); output.weight is optional and falls back to the
// token embedding (tied embeddings).
func New(cfg Config, be kernels.Backend, src TensorSource) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, be: be, layers: make([]layer, cfg.Layers)}
	b := binder{be: be, src: src}
	qDim, kvDim := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	m.embd = b.matrix("token_embd.weight", cfg.Vocab, cfg.Embd)
	m.outNorm = b.vector("output_norm.weight", cfg.Embd)
	if _, _, _, ok := src.LookupTensor("output.weight"); ok {
		m.output = b.matrix("output.weight", cfg.Vocab, cfg.Embd)
	} else {
		m.output = m.embd
		m.cfg.TiedEmbeddings = true
	}
	for i := range m.layers {
		p := fmt.Sprintf("blk.%d.", i)
		m.layers[i] = layer{
			attnNorm: b.vector(p+"attn_norm.weight", cfg.Embd),
			wq:       b.matrix(p+"attn_q.weight", qDim, cfg.Embd),
			wk:       b.matrix(p+"attn_k.weight", kvDim, cfg.Embd),
			wv:       b.matrix(p+"attn_v.weight", kvDim, cfg.Embd),
			wo:       b.matrix(p+"attn_output.weight", cfg.Embd, qDim),
			ffnNorm:  b.vector(p+"ffn_norm.weight", cfg.Embd),
			gate:     b.matrix(p+"ffn_gate.weight", cfg.FF, cfg.Embd),
			up:       b.matrix(p+"ffn_up.weight", cfg.FF, cfg.Embd),
			down:     b.matrix(p+"ffn_down.weight", cfg.Embd, cfg.FF),
		}
	}
	if b.err != nil {
		return nil, b.err
	}
	return m, nil
}

// binder binds tensors until the first error, which it keeps.
type binder struct {
	be  kernels.Backend
	src TensorSource
	err error
}

func (b *binder) matrix(name string, rows, cols int) kernels.Weight {
	return b.bind(name, rows, cols, false)
}

// vector binds a norm weight; norms must be plain floats since every backend
// reads them directly.
func (b *binder) vector(name string, n int) kernels.Weight {
	return b.bind(name, 1, n, true)
}

func (b *binder) bind(name string, rows, cols int, isVector bool) kernels.Weight {
	if b.err != nil {
		return nil
	}
	t, dims, data, ok := b.src.LookupTensor(name)
	if !ok {
		b.err = fmt.Errorf("%w: tensor %s missing", ErrInvalidModel, name)
		return nil
	}
	var want []uint64
	if isVector {
		want = []uint64{uint64(cols)}
		if t != quant.F32 {
			b.err = fmt.Errorf("%w: tensor %s is %v, norms must be F32", ErrInvalidModel, name, t)
			return nil
		}
	} else {
		want = []uint64{uint64(cols), uint64(rows)}
	}
	if !equalDims(dims, want) {
		b.err = fmt.Errorf("%w: tensor %s has shape %v, want %v", ErrInvalidModel, name, dims, want)
		return nil
	}
	w, err := b.be.NewWeight(t, rows, cols, data)
	if err != nil {
		b.err = fmt.Errorf("llama: tensor %s: %w", name, err)
		return nil
	}
	return w
}

// equalDims compares ggml dims, ignoring trailing 1s that some writers add.
func equalDims(got, want []uint64) bool {
	for len(got) > len(want) && got[len(got)-1] == 1 {
		got = got[:len(got)-1]
	}
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
