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

// forward runs every layer on x, which holds qlen new tokens of each of
// nseq sequences (rows grouped by sequence); every sequence's cache holds ctx
// tokens before them in its own blocks (blocksPer of them, numbered from
// seq*blocksPer). The LM head then runs on each sequence's last row, as a
// decode step samples every sequence.
func (m *synthModel) forward(cache kernels.KVCache, x kernels.Tensor, ctx, nseq, blocksPer int) {
	be, s := m.be, smolShape
	T := x.Rows()
	qlen := T / nseq
	kvw := s.kvHeads * s.headDim
	h, q := be.NewTensor(T, s.dim), be.NewTensor(T, s.dim)
	k, v := be.NewTensor(T, kvw), be.NewTensor(T, kvw)
	att, o := be.NewTensor(T, s.dim), be.NewTensor(T, s.dim)
	g, u := be.NewTensor(T, s.ff), be.NewTensor(T, s.ff)
	bs := cache.Spec().BlockSize
	pos, slots := make([]int32, T), make([]int32, T)
	seqs := make([]kernels.AttnSeq, nseq)
	lastRows := make([]int32, nseq)
	for sq := range nseq {
		blocks := make([]int32, blocksPer)
		for i := range blocks {
			blocks[i] = int32(sq*blocksPer + i)
		}
		seqs[sq] = kernels.AttnSeq{QueryStart: sq * qlen, QueryLen: qlen, KVLen: ctx + qlen, Blocks: blocks}
		lastRows[sq] = int32((sq+1)*qlen - 1)
		for i := range qlen {
			p := ctx + i
			pos[sq*qlen+i] = int32(p)
			slots[sq*qlen+i] = blocks[p/bs]*int32(bs) + int32(p%bs)
		}
	}
	rope := kernels.RoPEParams{Heads: s.heads, HeadDim: s.headDim, Dims: s.headDim, Base: 100000, FreqScale: 1, Interleaved: true}
	ropeK := rope
	ropeK.Heads = s.kvHeads
	ap := kernels.AttnParams{Heads: s.heads, KVHeads: s.kvHeads, HeadDim: s.headDim, Scale: 0.125, Seqs: seqs}
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
	last, logits := be.NewTensor(nseq, s.dim), be.NewTensor(nseq, s.vocab)
	be.Gather(last, x, lastRows)
	be.RMSNorm(last, last, m.norm, 1e-5)
	be.MatMul(logits, last, m.head)
}

// BenchmarkForward measures whole forward passes of a SmolLM2-135M-shaped
// model: batch-1 decode at 64 tokens of context (llama-bench's tg128 averages
// about that), one decode step of 16 sequences at that context (the batched
// decode of issue #3: its tok/s over batch-1's is the batching speedup) and
// a 512-token prompt (llama-bench's pp512). tok/s is the figure to compare
// with llama.cpp on the same machine.
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
		name         string
		ctx, T, seqs int
	}{{"decode/ctx=64", 64, 1, 1}, {"decode16/ctx=64", 64, 16, 16}, {"prefill/512", 0, 512, 1}} {
		b.Run(fmt.Sprintf("%s/act=%v", c.name, act), func(b *testing.B) {
			blocksPer := (c.ctx + c.T/c.seqs + 15) / 16
			spec := kernels.KVSpec{Layers: s.layers, Blocks: c.seqs * blocksPer, BlockSize: 16,
				KVHeads: s.kvHeads, HeadDim: s.headDim, DType: kernels.KVF16}
			cache, err := be.NewKVCache(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			x := be.NewTensor(c.T, s.dim)
			init := randVec(rand.New(rand.NewPCG(1, 1)), c.T*s.dim, 1)
			cpu0 := cpuSeconds(b)
			for b.Loop() {
				be.Write(x, init)
				m.forward(cache, x, c.ctx, c.seqs, blocksPer)
			}
			b.ReportMetric(float64(c.T)*float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(float64(c.T)*float64(b.N)/(cpuSeconds(b)-cpu0), "tok/cpu-s")
		})
	}
}
