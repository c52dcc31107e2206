package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// smolShape is SmolLM2-135M: the default model, whose weights are Q4_1 with a
// Q8_0 tied embedding / LM head.
var smolShape = struct {
	layers, dim, ff, heads, kvHeads, headDim, vocab int
}{30, 576, 1536, 9, 3, 64, 49152}

// synthModel holds random weights of SmolLM2's shapes and types, so the
// forward benchmarks stream the same bytes and do the same arithmetic as the
// real model without importing the model package (kernels import none of
// Tandem's packages).
type synthModel struct {
	be                      *Backend
	q, k, v, o, gate, up, d []kernels.Weight
	norm, head              kernels.Weight
}

func newSynthModel(b *testing.B, be *Backend) *synthModel {
	r := rand.New(rand.NewPCG(42, 42))
	s := smolShape
	m := &synthModel{be: be}
	mk := func(typ quant.Type, rows, cols int) kernels.Weight {
		w, err := be.NewWeight(typ, rows, cols, randWeights(r, typ, rows, cols))
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	kv := s.kvHeads * s.headDim
	for l := 0; l < s.layers; l++ {
		m.q = append(m.q, mk(quant.Q4_1, s.dim, s.dim))
		m.k = append(m.k, mk(quant.Q4_1, kv, s.dim))
		m.v = append(m.v, mk(quant.Q4_1, kv, s.dim))
		m.o = append(m.o, mk(quant.Q4_1, s.dim, s.dim))
		m.gate = append(m.gate, mk(quant.Q4_1, s.ff, s.dim))
		m.up = append(m.up, mk(quant.Q4_1, s.ff, s.dim))
		m.d = append(m.d, mk(quant.Q4_1, s.dim, s.ff))
	}
	ones := make([]byte, 4*s.dim)
	for i := 0; i < s.dim; i++ {
		binary.LittleEndian.PutUint32(ones[4*i:], math.Float32bits(1))
	}
	var err error
	if m.norm, err = be.NewWeight(quant.F32, 1, s.dim, ones); err != nil {
		b.Fatal(err)
	}
	m.head = mk(quant.Q8_0, s.vocab, s.dim)
	return m
}

// forward runs every layer on T new tokens of one sequence whose cache holds
// ctx tokens before them, then the LM head on the last row.
func (m *synthModel) forward(cache kernels.KVCache, x kernels.Tensor, ctx int, blocks []int32) {
	be, s := m.be, smolShape
	T := x.Rows()
	kvw := s.kvHeads * s.headDim
	h, q := be.NewTensor(T, s.dim), be.NewTensor(T, s.dim)
	k, v := be.NewTensor(T, kvw), be.NewTensor(T, kvw)
	att, o := be.NewTensor(T, s.dim), be.NewTensor(T, s.dim)
	g, u := be.NewTensor(T, s.ff), be.NewTensor(T, s.ff)
	pos, slots := make([]int32, T), make([]int32, T)
	for i := range pos {
		pos[i] = int32(ctx + i)
		slots[i] = int32(ctx + i)
	}
	rope := kernels.RoPEParams{Heads: s.heads, HeadDim: s.headDim, Dims: s.headDim, Base: 100000, FreqScale: 1, Interleaved: true}
	ropeK := rope
	ropeK.Heads = s.kvHeads
	ap := kernels.AttnParams{Heads: s.heads, KVHeads: s.kvHeads, HeadDim: s.headDim, Scale: 0.125,
		Seqs: []kernels.AttnSeq{{QueryLen: T, KVLen: ctx + T, Blocks: blocks}}}
	for l := 0; l < s.layers; l++ {
		be.RMSNorm(h, x, m.norm, 1e-5)
		be.MatMul(q, h, m.q[l])
		be.MatMul(k, h, m.k[l])
		be.MatMul(v, h, m.v[l])
		be.RoPE(q, pos, rope)
		be.RoPE(k, pos, ropeK)
		be.StoreKV(cache, l, k, v, slots)
		be.Attention(att, q, cache, l, ap)
		be.MatMul(o, att, m.o[l])
		be.Add(x, o)
		be.RMSNorm(h, x, m.norm, 1e-5)
		be.MatMul(g, h, m.gate[l])
		be.MatMul(u, h, m.up[l])
		be.SwiGLU(g, g, u)
		be.MatMul(o, g, m.d[l])
		be.Add(x, o)
	}
	last, logits := be.NewTensor(1, s.dim), be.NewTensor(1, s.vocab)
	be.Gather(last, x, []int32{int32(T - 1)})
	be.RMSNorm(last, last, m.norm, 1e-5)
	be.MatMul(logits, last, m.head)
}

// BenchmarkForward measures whole forward passes of a SmolLM2-135M-shaped
// model: batch-1 decode at 64 tokens of context (llama-bench's tg128 averages
// about that) and a 512-token prompt (llama-bench's pp512). tok/s is the
// figure to compare with llama.cpp on the same machine.
func BenchmarkForward(b *testing.B) {
	for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
		be := newBackend(b, Config{Threads: benchThreads(), MaxLevel: LevelAVX512, Activations: act})
		benchForward(b, be, act)
	}
}

func benchForward(b *testing.B, be *Backend, act kernels.Activations) {
	m := newSynthModel(b, be)
	s := smolShape
	for _, c := range []struct {
		name   string
		ctx, T int
	}{{"decode/ctx=64", 64, 1}, {"prefill/512", 0, 512}} {
		b.Run(fmt.Sprintf("%s/act=%v", c.name, act), func(b *testing.B) {
			spec := kernels.KVSpec{Layers: s.layers, Blocks: (c.ctx + c.T + 15) / 16, BlockSize: 16,
				KVHeads: s.kvHeads, HeadDim: s.headDim, DType: kernels.KVF16}
			cache, err := be.NewKVCache(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			blocks := make([]int32, spec.Blocks)
			for i := range blocks {
				blocks[i] = int32(i)
			}
			x := be.NewTensor(c.T, s.dim)
			init := randVec(rand.New(rand.NewPCG(1, 1)), c.T*s.dim, 1)
			for b.Loop() {
				be.Write(x, init)
				m.forward(cache, x, c.ctx, blocks)
			}
			b.ReportMetric(float64(c.T)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
