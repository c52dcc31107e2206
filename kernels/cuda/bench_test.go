package cuda_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

// Benchmarks on random weights of real model shapes. They need a GPU
// (TANDEM_CUDA_TESTS=1); scripts/gpu-check.sh runs them:
//
//	cuda.test -test.run '^$' -test.bench 'MatVec' -test.benchtime 200x
//	cuda.test -test.run '^$' -test.bench 'Model' -test.benchtime 5x

// benchModels are the shapes of SmolLM2-135M and Llama-3-8B.
func benchModels() []llama.Config {
	return []llama.Config{
		{Name: "smollm2-135m", Layers: 30, Embd: 576, FF: 1536, Heads: 9, KVHeads: 3, HeadDim: 64, Vocab: 49152,
			ContextLength: 8192, RoPEBase: 100000, RoPEDims: 64, RoPEFreqScale: 1, RoPEInterleaved: true, NormEps: 1e-5, TiedEmbeddings: true},
		{Name: "llama3-8b", Layers: 32, Embd: 4096, FF: 14336, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 128256,
			ContextLength: 8192, RoPEBase: 500000, RoPEDims: 128, RoPEFreqScale: 1, RoPEInterleaved: true, NormEps: 1e-5},
	}
}

// tiled returns n bytes of t-encoded random weights (scale ~1/64, like a
// 4096-wide trained layer): a 64K-value quantized template repeated, which
// keeps whole blocks intact and costs a memcpy instead of quantizing
// billions of values.
func tiled(t quant.Type, n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	vals := make([]float32, 1<<16)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64()) / 64
	}
	tmpl := make([]byte, t.RowBytes(len(vals)))
	if err := quant.Quantize(t, vals, tmpl); err != nil {
		panic(err)
	}
	out := make([]byte, n)
	for off := 0; off < n; off += copy(out[off:], tmpl) {
	}
	return out
}

// randomSource binds every tensor of cfg to prefixes of one shared tiled
// buffer: the backend copies weights to the device, so sharing host bytes
// is safe and keeps host memory at the size of the largest tensor.
func randomSource(cfg llama.Config, t quant.Type) llamatest.Source {
	largest := max(cfg.Vocab*cfg.Embd, cfg.FF*cfg.Embd)
	pool := tiled(t, t.RowBytes(largest), 1)
	ones := make([]byte, 4*max(cfg.Embd, 1))
	if err := quant.Quantize(quant.F32, onesOf(cfg.Embd), ones); err != nil {
		panic(err)
	}
	src := llamatest.Source{}
	mat := func(name string, rows, cols int) {
		src[name] = llamatest.Tensor{Type: t, Dims: []uint64{uint64(cols), uint64(rows)}, Data: pool[:t.RowBytes(cols)*rows]}
	}
	vec := func(name string) {
		src[name] = llamatest.Tensor{Type: quant.F32, Dims: []uint64{uint64(cfg.Embd)}, Data: ones}
	}
	q, kv := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	mat("token_embd.weight", cfg.Vocab, cfg.Embd)
	vec("output_norm.weight")
	if !cfg.TiedEmbeddings {
		mat("output.weight", cfg.Vocab, cfg.Embd)
	}
	for l := 0; l < cfg.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		vec(p + "attn_norm.weight")
		vec(p + "ffn_norm.weight")
		mat(p+"attn_q.weight", q, cfg.Embd)
		mat(p+"attn_k.weight", kv, cfg.Embd)
		mat(p+"attn_v.weight", kv, cfg.Embd)
		mat(p+"attn_output.weight", cfg.Embd, q)
		mat(p+"ffn_gate.weight", cfg.FF, cfg.Embd)
		mat(p+"ffn_up.weight", cfg.FF, cfg.Embd)
		mat(p+"ffn_down.weight", cfg.Embd, cfg.FF)
	}
	return src
}

func onesOf(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 1
	}
	return v
}

// BenchmarkMatVec measures the matrix-vector kernels on Llama-3-8B's
// projection shapes and reports achieved bandwidth (weight bytes plus
// activations read and written, per second) and its fraction of the card's
// peak.
func BenchmarkMatVec(b *testing.B) {
	g := gpu(b)
	peak := g.Device().PeakBandwidth()
	shapes := []struct {
		name       string
		rows, cols int
	}{{"qo_4096x4096", 4096, 4096}, {"gateup_14336x4096", 14336, 4096}, {"down_4096x14336", 4096, 14336}, {"lmhead_128256x4096", 128256, 4096}}
	for _, typ := range []quant.Type{quant.Q4_1, quant.Q4_0, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q6_K, quant.F16, quant.BF16} {
		for _, s := range shapes {
			w, err := g.NewWeight(typ, s.rows, s.cols, tiled(typ, typ.RowBytes(s.cols)*s.rows, 2))
			if err != nil {
				b.Fatal(err)
			}
			for _, batch := range []int{1, 32} {
				b.Run(fmt.Sprintf("%v/%s/batch%d", typ, s.name, batch), func(b *testing.B) {
					x, d := g.NewTensor(batch, s.cols), g.NewTensor(batch, s.rows)
					g.Write(x, onesOf(batch*s.cols))
					g.MatMul(d, x, w) // warm-up: scratch sizing, module load
					if err := g.Sync(); err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					start := time.Now()
					for i := 0; i < b.N; i++ {
						g.MatMul(d, x, w)
					}
					if err := g.Sync(); err != nil {
						b.Fatal(err)
					}
					el := time.Since(start).Seconds() / float64(b.N)
					bytes := float64(typ.RowBytes(s.cols)*s.rows + 4*batch*(s.cols+s.rows))
					b.ReportMetric(bytes/el/1e9, "GB/s")
					if peak > 0 {
						b.ReportMetric(100*bytes/el/peak, "%peak")
					}
					b.ReportMetric(el*1e6, "us/op")
				})
			}
			if err := w.(*cuda.Weight).Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkModel runs whole random-weight models: decode steps of batch 1
// and 32 sequences (each with 128 tokens of context) and prefill of 1x512
// and 32x128 prompt tokens. tok/s counts generated (decode) or processed
// (prefill) tokens. Q4_K runs decode only, and only where every row holds
// whole 256-value blocks (Llama-3-8B; SmolLM2's 576 does not), and Q5_0
// decode only on SmolLM2 (the type its Q4_K_M file stores most matrices
// in), to keep gpu-check within its time budget.
func BenchmarkModel(b *testing.B) {
	g := gpu(b)
	for _, cfg := range benchModels() {
		for _, typ := range []quant.Type{quant.Q4_1, quant.F16, quant.Q4_K, quant.Q5_0} {
			decodeOnly := typ == quant.Q4_K || typ == quant.Q5_0
			if typ == quant.Q4_K && (cfg.Embd%256 != 0 || cfg.FF%256 != 0 || cfg.Heads*cfg.HeadDim%256 != 0) {
				continue
			}
			if typ == quant.Q5_0 && cfg.Embd%256 == 0 {
				continue
			}
			b.Run(cfg.Name+"/"+typ.String(), func(b *testing.B) {
				m, err := llama.New(cfg, g, randomSource(cfg, typ))
				if err != nil {
					b.Fatal(err)
				}
				for _, batch := range []int{1, 32} {
					b.Run(fmt.Sprintf("decode/batch%d", batch), func(b *testing.B) { benchDecode(b, g, m, batch, 128) })
				}
				if decodeOnly {
					return
				}
				b.Run("prefill/batch1", func(b *testing.B) { benchPrefill(b, g, m, 1, 512) })
				b.Run("prefill/batch32", func(b *testing.B) { benchPrefill(b, g, m, 32, 128) })
			})
		}
	}
}

const benchBlock = 16

// seqBatch appends tokens [from, to) of sequence s (block table at
// tables[s]) to bt and asks for its last row's logits.
func seqBatch(bt *llama.Batch, tables [][]int32, s, from, to int, rng *rand.Rand, vocab int) {
	start := len(bt.Tokens)
	for p := from; p < to; p++ {
		bt.Tokens = append(bt.Tokens, int32(rng.IntN(vocab)))
		bt.Positions = append(bt.Positions, int32(p))
		bt.Slots = append(bt.Slots, tables[s][p/benchBlock]*benchBlock+int32(p%benchBlock))
	}
	bt.Seqs = append(bt.Seqs, kernels.AttnSeq{QueryStart: start, QueryLen: to - from, KVLen: to, Blocks: tables[s]})
	bt.LogitRows = append(bt.LogitRows, int32(len(bt.Tokens)-1))
}

func newBenchCache(b *testing.B, m *llama.Model, seqs, tokens int) (kernels.KVCache, [][]int32) {
	per := (tokens + benchBlock - 1) / benchBlock
	cfg := m.Config()
	c, err := m.Backend().NewKVCache(cfg.KVSpec(seqs*per, benchBlock, kernels.KVF16))
	if err != nil {
		b.Fatal(err)
	}
	tables := make([][]int32, seqs)
	for s := range tables {
		for i := 0; i < per; i++ {
			tables[s] = append(tables[s], int32(s*per+i))
		}
	}
	return c, tables
}

func forward(b *testing.B, g *cuda.Backend, m *llama.Model, c kernels.KVCache, bt *llama.Batch) {
	if _, err := m.Forward(context.Background(), c, bt, nil); err != nil {
		b.Fatal(err)
	}
	if err := g.Err(); err != nil {
		b.Fatal(err)
	}
}

func benchDecode(b *testing.B, g *cuda.Backend, m *llama.Model, batch, context int) {
	rng := rand.New(rand.NewPCG(3, 3))
	vocab := m.Config().Vocab
	c, tables := newBenchCache(b, m, batch, context+b.N+1)
	defer c.Close()
	pre := &llama.Batch{}
	for s := 0; s < batch; s++ {
		seqBatch(pre, tables, s, 0, context, rng, vocab)
	}
	forward(b, g, m, c, pre)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		bt := &llama.Batch{}
		for s := 0; s < batch; s++ {
			seqBatch(bt, tables, s, context+i, context+i+1, rng, vocab)
		}
		forward(b, g, m, c, bt) // reads the logits back: a full step
	}
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(batch*b.N)/el, "tok/s")
	b.ReportMetric(el/float64(b.N)*1e3, "ms/step")
}

func benchPrefill(b *testing.B, g *cuda.Backend, m *llama.Model, batch, prompt int) {
	rng := rand.New(rand.NewPCG(4, 4))
	vocab := m.Config().Vocab
	c, tables := newBenchCache(b, m, batch, prompt)
	defer c.Close()
	bt := &llama.Batch{}
	for s := 0; s < batch; s++ {
		seqBatch(bt, tables, s, 0, prompt, rng, vocab)
	}
	forward(b, g, m, c, bt) // warm-up
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		forward(b, g, m, c, bt) // same slots: rewrites the same cache blocks
	}
	el := time.Since(start).Seconds()
	b.ReportMetric(float64(batch*prompt*b.N)/el, "tok/s")
	b.ReportMetric(el/float64(b.N)*1e3, "ms/iter")
}
