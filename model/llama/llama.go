// Package llama runs Llama-family decoder-only transformers (Llama 2/3,
// SmolLM, Mistral-style GQA models) on a kernels.Backend.
//
// A Model holds its weights on the backend and is stateless between calls:
// the KV cache is passed to every Forward together with the block tables of
// the batch's sequences, so one model serves any number of sequences whose
// memory the engine manages. Forward computes one batched pass over the new
// tokens of several sequences (prompt chunks and single decode tokens mixed)
// and returns logits only for the rows the caller asks for.
//
// The layer is the standard pre-norm block:
//
//	h  = x + Wo·Attn(RoPE(Wq·rms(x)), RoPE(Wk·rms(x)), Wv·rms(x))
//	x' = h + Wdown·(silu(Wgate·rms(h)) ⊙ Wup·rms(h))
//
// GGUF files store Q and K permuted for adjacent-pair ("normal") RoPE, which
// Config.RoPEInterleaved selects.
package llama

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/tandemserve/tandem/kernels"
)

// Sentinel errors.
var (
	ErrInvalidModel = errors.New("llama: invalid model")
	ErrInvalidBatch = errors.New("llama: invalid batch")
)

// Config is the architecture of a model.
type Config struct {
	Name            string
	Layers          int
	Embd            int // hidden size
	FF              int // feed-forward size
	Heads           int
	KVHeads         int
	HeadDim         int
	Vocab           int
	ContextLength   int
	RoPEBase        float32
	RoPEDims        int
	RoPEFreqScale   float32
	RoPEInterleaved bool
	NormEps         float32
	TiedEmbeddings  bool
}

// Validate checks the cross-field invariants the forward pass relies on.
func (c *Config) Validate() error {
	switch {
	case c.Layers <= 0 || c.Embd <= 0 || c.FF <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.Vocab <= 0:
		return fmt.Errorf("%w: non-positive dimension in %+v", ErrInvalidModel, *c)
	case c.Layers > 1024 || c.Heads > 1024 || c.Embd > 1<<16 || c.FF > 1<<18 || c.Vocab > 1<<22:
		return fmt.Errorf("%w: implausibly large dimension in %+v", ErrInvalidModel, *c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: %d attention heads not a multiple of %d KV heads", ErrInvalidModel, c.Heads, c.KVHeads)
	case c.HeadDim <= 0 || c.HeadDim > 1024:
		return fmt.Errorf("%w: head dimension %d", ErrInvalidModel, c.HeadDim)
	case c.RoPEDims <= 0 || c.RoPEDims > c.HeadDim || c.RoPEDims%2 != 0:
		return fmt.Errorf("%w: RoPE dimension %d for head dimension %d", ErrInvalidModel, c.RoPEDims, c.HeadDim)
	case !(c.RoPEBase > 0) || math.IsInf(float64(c.RoPEBase), 0):
		return fmt.Errorf("%w: RoPE base %v", ErrInvalidModel, c.RoPEBase)
	case !(c.NormEps > 0) || c.NormEps > 1:
		return fmt.Errorf("%w: norm epsilon %v", ErrInvalidModel, c.NormEps)
	case c.ContextLength <= 0:
		return fmt.Errorf("%w: context length %d", ErrInvalidModel, c.ContextLength)
	}
	return nil
}

// KVSpec returns the cache shape this model needs for blocks blocks of
// blockSize tokens.
func (c *Config) KVSpec(blocks, blockSize int, dtype kernels.KVDType) kernels.KVSpec {
	return kernels.KVSpec{Layers: c.Layers, Blocks: blocks, BlockSize: blockSize, KVHeads: c.KVHeads, HeadDim: c.HeadDim, DType: dtype}
}

type layer struct {
	attnNorm, wq, wk, wv, wo kernels.Weight
	ffnNorm, gate, up, down  kernels.Weight
}

// Model is a loaded Llama model. Forward may not be called concurrently: the
// engine's step loop owns the model.
type Model struct {
	cfg     Config
	be      kernels.Backend
	embd    kernels.Weight
	outNorm kernels.Weight
	output  kernels.Weight
	layers  []layer

	// allReduce sums a row-parallel projection's partial results across
	// tensor-parallel ranks; nil for a model that runs whole on one backend.
	allReduce func(ctx context.Context, t kernels.Tensor) error

	scratch *scratch
}

// Config returns the model's architecture.
func (m *Model) Config() Config { return m.cfg }

// NewKVCache allocates a KV cache of blocks blocks of blockSize tokens on
// the model's backend.
func (m *Model) NewKVCache(blocks, blockSize int, dtype kernels.KVDType) (kernels.KVCache, error) {
	return m.be.NewKVCache(m.cfg.KVSpec(blocks, blockSize, dtype))
}

// Backend returns the backend the model runs on.
func (m *Model) Backend() kernels.Backend { return m.be }

// scratch holds the activation tensors of one batch size.
type scratch struct {
	rows                   int
	x, xn, q, k, v, attn   kernels.Tensor
	proj, gate, up, hidden kernels.Tensor
}

func (m *Model) scratchFor(rows int) *scratch {
	if s := m.scratch; s != nil && s.rows == rows {
		return s
	}
	c, be := &m.cfg, m.be
	s := &scratch{
		rows:   rows,
		x:      be.NewTensor(rows, c.Embd),
		xn:     be.NewTensor(rows, c.Embd),
		q:      be.NewTensor(rows, c.Heads*c.HeadDim),
		k:      be.NewTensor(rows, c.KVHeads*c.HeadDim),
		v:      be.NewTensor(rows, c.KVHeads*c.HeadDim),
		attn:   be.NewTensor(rows, c.Heads*c.HeadDim),
		proj:   be.NewTensor(rows, c.Embd),
		gate:   be.NewTensor(rows, c.FF),
		up:     be.NewTensor(rows, c.FF),
		hidden: be.NewTensor(rows, c.FF),
	}
	m.scratch = s
	return s
}

// Forward runs one batched pass and returns the logits of b.LogitRows, row
// after row (len(b.LogitRows)*Vocab values). onLayer, when not nil, is called
// after each layer's keys and values are in the cache (layer-wise KV
// streaming hooks in there); it runs on the caller's goroutine.
func (m *Model) Forward(ctx context.Context, cache kernels.KVCache, b *Batch, onLayer func(layer int)) ([]float32, error) {
	if err := m.checkBatch(cache, b); err != nil {
		return nil, err
	}
	c, be := &m.cfg, m.be
	s := m.scratchFor(b.Len())
	rope := kernels.RoPEParams{HeadDim: c.HeadDim, Dims: c.RoPEDims, Base: c.RoPEBase, FreqScale: c.RoPEFreqScale, Interleaved: c.RoPEInterleaved}
	qRoPE, kRoPE := rope, rope
	qRoPE.Heads, kRoPE.Heads = c.Heads, c.KVHeads
	attn := kernels.AttnParams{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim, Scale: float32(1 / math.Sqrt(float64(c.HeadDim))), Seqs: b.Seqs}

	be.Embed(s.x, m.embd, b.Tokens)
	for l := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w := &m.layers[l]
		be.RMSNorm(s.xn, s.x, w.attnNorm, c.NormEps)
		be.MatMul(s.q, s.xn, w.wq)
		be.MatMul(s.k, s.xn, w.wk)
		be.MatMul(s.v, s.xn, w.wv)
		be.RoPE(s.q, b.Positions, qRoPE)
		be.RoPE(s.k, b.Positions, kRoPE)
		be.StoreKV(cache, l, s.k, s.v, b.Slots)
		be.Attention(s.attn, s.q, cache, l, attn)
		be.MatMul(s.proj, s.attn, w.wo)
		if err := m.reduce(ctx, s.proj); err != nil {
			return nil, err
		}
		be.Add(s.x, s.proj)

		be.RMSNorm(s.xn, s.x, w.ffnNorm, c.NormEps)
		be.MatMul(s.gate, s.xn, w.gate)
		be.MatMul(s.up, s.xn, w.up)
		be.SwiGLU(s.hidden, s.gate, s.up)
		be.MatMul(s.proj, s.hidden, w.down)
		if err := m.reduce(ctx, s.proj); err != nil {
			return nil, err
		}
		be.Add(s.x, s.proj)
		if onLayer != nil {
			onLayer(l)
		}
	}
	if len(b.LogitRows) == 0 {
		return nil, nil
	}
	n := len(b.LogitRows)
	last := be.NewTensor(n, c.Embd)
	normed := be.NewTensor(n, c.Embd)
	logits := be.NewTensor(n, c.Vocab)
	be.Gather(last, s.x, b.LogitRows)
	be.RMSNorm(normed, last, m.outNorm, c.NormEps)
	be.MatMul(logits, normed, m.output)
	out := make([]float32, n*c.Vocab)
	be.Read(out, logits)
	return out, nil
}

func (m *Model) reduce(ctx context.Context, t kernels.Tensor) error {
	if m.allReduce == nil {
		return nil
	}
	if err := m.allReduce(ctx, t); err != nil {
		return fmt.Errorf("llama: all-reduce: %w", err)
	}
	return nil
}

// checkBatch rejects batches that would make a kernel read or write out of
// bounds; batches are built by the engine, but a bug there must surface as an
// error, not as corrupted KV memory.
func (m *Model) checkBatch(cache kernels.KVCache, b *Batch) error {
	n := b.Len()
	spec := cache.Spec()
	switch {
	case n == 0:
		return fmt.Errorf("%w: no tokens", ErrInvalidBatch)
	case len(b.Positions) != n || len(b.Slots) != n:
		return fmt.Errorf("%w: %d tokens, %d positions, %d slots", ErrInvalidBatch, n, len(b.Positions), len(b.Slots))
	case spec.Layers != m.cfg.Layers || spec.KVHeads != m.cfg.KVHeads || spec.HeadDim != m.cfg.HeadDim:
		return fmt.Errorf("%w: KV cache shape %+v does not fit the model", ErrInvalidBatch, spec)
	}
	for i, t := range b.Tokens {
		if t < 0 || int(t) >= m.cfg.Vocab {
			return fmt.Errorf("%w: token %d at row %d outside vocabulary of %d", ErrInvalidBatch, t, i, m.cfg.Vocab)
		}
		if p := b.Positions[i]; p < 0 || int(p) >= m.cfg.ContextLength {
			return fmt.Errorf("%w: position %d at row %d outside context of %d", ErrInvalidBatch, p, i, m.cfg.ContextLength)
		}
		if s := b.Slots[i]; s < 0 || int64(s) >= int64(spec.Blocks)*int64(spec.BlockSize) {
			return fmt.Errorf("%w: slot %d at row %d outside the cache", ErrInvalidBatch, s, i)
		}
	}
	rows := 0
	for i, s := range b.Seqs {
		if s.QueryStart != rows || s.QueryLen <= 0 || s.KVLen < s.QueryLen || s.KVLen > len(s.Blocks)*spec.BlockSize {
			return fmt.Errorf("%w: sequence %d (rows %d+%d, KV length %d, %d blocks) does not tile the batch", ErrInvalidBatch, i, s.QueryStart, s.QueryLen, s.KVLen, len(s.Blocks))
		}
		for _, blk := range s.Blocks[:(s.KVLen+spec.BlockSize-1)/spec.BlockSize] {
			if blk < 0 || int(blk) >= spec.Blocks {
				return fmt.Errorf("%w: sequence %d uses block %d of %d", ErrInvalidBatch, i, blk, spec.Blocks)
			}
		}
		rows += s.QueryLen
	}
	if rows != n {
		return fmt.Errorf("%w: sequences cover %d of %d rows", ErrInvalidBatch, rows, n)
	}
	for _, r := range b.LogitRows {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("%w: logit row %d outside the batch", ErrInvalidBatch, r)
		}
	}
	return nil
}
