package llama_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

const blockSize = 4

func tinyModel(t *testing.T, wt quant.Type) *llama.Model {
	t.Helper()
	cfg := llamatest.TinyConfig()
	src, err := llamatest.Random(cfg, wt, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.New(cfg, ref.New(), src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newCache(t *testing.T, m *llama.Model, blocks int, dtype kernels.KVDType) kernels.KVCache {
	t.Helper()
	cfg := m.Config()
	c, err := m.Backend().NewKVCache(cfg.KVSpec(blocks, blockSize, dtype))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seq is a test sequence: its tokens so far and its block table.
type seq struct {
	tokens []int32
	blocks []int32
}

// batchOf appends the new tokens of each sequence (all tokens past done[i])
// to one batch and asks for the logits of each sequence's last row.
func batchOf(seqs []*seq, done []int) *llama.Batch {
	b := &llama.Batch{}
	for i, s := range seqs {
		start := len(b.Tokens)
		for p := done[i]; p < len(s.tokens); p++ {
			b.Tokens = append(b.Tokens, s.tokens[p])
			b.Positions = append(b.Positions, int32(p))
			b.Slots = append(b.Slots, s.blocks[p/blockSize]*blockSize+int32(p%blockSize))
		}
		n := len(b.Tokens) - start
		b.Seqs = append(b.Seqs, kernels.AttnSeq{QueryStart: start, QueryLen: n, KVLen: len(s.tokens), Blocks: s.blocks})
		b.LogitRows = append(b.LogitRows, int32(len(b.Tokens)-1))
	}
	return b
}

func forward(t *testing.T, m *llama.Model, c kernels.KVCache, seqs []*seq, done []int) [][]float32 {
	t.Helper()
	logits, err := m.Forward(context.Background(), c, batchOf(seqs, done), nil)
	if err != nil {
		t.Fatal(err)
	}
	v := m.Config().Vocab
	out := make([][]float32, len(seqs))
	for i := range seqs {
		out[i] = logits[i*v : (i+1)*v]
	}
	return out
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

var prompt = []int32{5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71}

// Decoding token by token must give the logits of one pass over the whole
// prompt: the cache holds exactly what recomputation would.
func TestIncrementalMatchesFullPrefill(t *testing.T) {
	for _, wt := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_1} {
		t.Run(wt.String(), func(t *testing.T) {
			m := tinyModel(t, wt)
			full := forward(t, m, newCache(t, m, 8, kernels.KVF16), []*seq{{tokens: prompt, blocks: []int32{0, 1, 2}}}, []int{0})[0]

			c := newCache(t, m, 8, kernels.KVF16)
			s := &seq{blocks: []int32{0, 1, 2}}
			var last []float32
			for i, tok := range prompt {
				s.tokens = append(s.tokens, tok)
				last = forward(t, m, c, []*seq{s}, []int{i})[0]
			}
			if d := maxDiff(full, last); d > 1e-4 {
				t.Fatalf("incremental logits differ from full prefill by %g", d)
			}
		})
	}
}

// A sequence batched with others must produce bit-identical logits to the
// same sequence alone, wherever its blocks sit in the cache.
func TestBatchInvariantAndPaged(t *testing.T) {
	m := tinyModel(t, quant.Q4_1)
	alone := forward(t, m, newCache(t, m, 16, kernels.KVF16), []*seq{{tokens: prompt, blocks: []int32{0, 1, 2}}}, []int{0})[0]

	c := newCache(t, m, 16, kernels.KVF16)
	other := &seq{tokens: []int32{7, 7, 7, 2, 90}, blocks: []int32{3, 11}}
	target := &seq{tokens: prompt, blocks: []int32{9, 4, 14}} // scattered blocks
	got := forward(t, m, c, []*seq{other, target}, []int{0, 0})[1]
	if d := maxDiff(alone, got); d != 0 {
		t.Fatalf("batched, paged logits differ from the sequence alone by %g", d)
	}
}

func TestInt8KVCloseToF16(t *testing.T) {
	m := tinyModel(t, quant.Q8_0)
	s := []*seq{{tokens: prompt, blocks: []int32{0, 1, 2}}}
	f16 := forward(t, m, newCache(t, m, 4, kernels.KVF16), s, []int{0})[0]
	i8 := forward(t, m, newCache(t, m, 4, kernels.KVInt8), s, []int{0})[0]
	var scale float64
	for _, v := range f16 {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	// int8 rows keep about 2 significant digits: expect a small relative
	// error, and some error (a zero would mean the option is ignored).
	if d := maxDiff(f16, i8) / scale; d > 0.05 || d == 0 {
		t.Fatalf("int8 KV logits differ from f16 by %g of the logit range, want (0, 0.05]", d)
	}
}

func TestForwardRejectsBadBatches(t *testing.T) {
	m := tinyModel(t, quant.F32)
	c := newCache(t, m, 2, kernels.KVF16)
	good := func() *llama.Batch {
		return batchOf([]*seq{{tokens: []int32{1, 2, 3}, blocks: []int32{0}}}, []int{0})
	}
	tests := []struct {
		name string
		edit func(*llama.Batch)
	}{
		{"empty", func(b *llama.Batch) { *b = llama.Batch{} }},
		{"token outside vocab", func(b *llama.Batch) { b.Tokens[1] = 1000 }},
		{"negative token", func(b *llama.Batch) { b.Tokens[0] = -1 }},
		{"position past context", func(b *llama.Batch) { b.Positions[2] = 100000 }},
		{"slot outside cache", func(b *llama.Batch) { b.Slots[0] = 8 }},
		{"missing positions", func(b *llama.Batch) { b.Positions = b.Positions[:2] }},
		{"block outside cache", func(b *llama.Batch) { b.Seqs[0].Blocks = []int32{5} }},
		{"KV longer than block table", func(b *llama.Batch) { b.Seqs[0].KVLen = 9 }},
		{"sequences do not cover rows", func(b *llama.Batch) { b.Seqs[0].QueryLen = 2; b.Seqs[0].KVLen = 2 }},
		{"logit row outside batch", func(b *llama.Batch) { b.LogitRows = []int32{3} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := good()
			tt.edit(b)
			if _, err := m.Forward(context.Background(), c, b, nil); !errors.Is(err, llama.ErrInvalidBatch) {
				t.Fatalf("Forward = %v, want ErrInvalidBatch", err)
			}
		})
	}
}

func TestForwardHonoursContextAndLayerHook(t *testing.T) {
	m := tinyModel(t, quant.F32)
	c := newCache(t, m, 2, kernels.KVF16)
	b := batchOf([]*seq{{tokens: []int32{1, 2, 3}, blocks: []int32{0}}}, []int{0})
	var layers []int
	if _, err := m.Forward(context.Background(), c, b, func(l int) { layers = append(layers, l) }); err != nil {
		t.Fatal(err)
	}
	if len(layers) != m.Config().Layers || layers[0] != 0 || layers[len(layers)-1] != m.Config().Layers-1 {
		t.Fatalf("layer hook saw %v", layers)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Forward(ctx, c, b, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Forward on a cancelled context = %v, want context.Canceled", err)
	}
}

func TestNewRejectsBadWeights(t *testing.T) {
	cfg := llamatest.TinyConfig()
	src, err := llamatest.Random(cfg, quant.Q8_0, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	missing := llamatest.Source{}
	for k, v := range src {
		missing[k] = v
	}
	delete(missing, "blk.1.ffn_up.weight")
	wrongShape := llamatest.Source{}
	for k, v := range src {
		wrongShape[k] = v
	}
	w := wrongShape["blk.0.ffn_up.weight"]
	w.Dims = []uint64{w.Dims[1], w.Dims[0]}
	wrongShape["blk.0.ffn_up.weight"] = w
	badCfg := cfg
	badCfg.KVHeads = 3

	for name, tc := range map[string]struct {
		cfg llama.Config
		src llamatest.Source
	}{
		"missing tensor": {cfg, missing},
		"wrong shape":    {cfg, wrongShape},
		"heads not GQA":  {badCfg, src},
	} {
		if _, err := llama.New(tc.cfg, ref.New(), tc.src); !errors.Is(err, llama.ErrInvalidModel) {
			t.Errorf("%s: New = %v, want ErrInvalidModel", name, err)
		}
	}
}
