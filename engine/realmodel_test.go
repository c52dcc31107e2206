package engine_test

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cpu"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// openReal opens $TANDEM_MODEL on the CPU backend, or skips.
func openReal(t testing.TB) *model.Model {
	t.Helper()
	path := os.Getenv("TANDEM_MODEL")
	if path == "" {
		t.Skip("TANDEM_MODEL not set: skipping real-model test (make test sets it)")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skipf("TANDEM_MODEL %s not readable: %v", path, err)
	}
	be, err := cpu.New(cpu.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(path, be)
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		be.Close()
	})
	return m
}

func chatPrompt(t testing.TB, m *model.Model, text string) []int32 {
	t.Helper()
	s, err := m.Tokenizer.Render([]tokenizer.Message{{Role: "user", Content: text}}, true)
	if err != nil {
		t.Fatal(err)
	}
	return m.Tokenizer.Encode(s, tokenizer.EncodeOptions{AddBOS: m.Tokenizer.AddBOS(), ParseSpecial: true})
}

func startReal(t testing.TB, m *model.Model, blocks int, sc scheduler.Config, dt kernels.KVDType) *engine.Engine {
	t.Helper()
	mc := m.Llama.Config()
	cache, err := m.Llama.Backend().NewKVCache(mc.KVSpec(blocks, 16, dt))
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Scheduler = sc
	cfg.Scheduler.MaxSeqLen = mc.ContextLength
	cfg.Vocab, cfg.ModelID, cfg.IsEOG = mc.Vocab, m.ID, m.Tokenizer.IsEOG
	e, err := engine.New(cfg, m.Llama, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
		if st := e.BlockManager().Stats(); st.Held != 0 {
			t.Errorf("blocks held after Close: %+v", st)
		}
		cache.Close()
	})
	return e
}

// TestRealModelBatchedEqualsAlone is the acceptance test of continuous
// batching: greedy outputs of sequences run together in one batch (prompt
// chunks and decodes mixed in a step) are identical to each run alone.
func TestRealModelBatchedEqualsAlone(t *testing.T) {
	m := openReal(t)
	texts := []string{
		"What is the capital of France?",
		"Write a haiku about the sea.",
		"List three prime numbers.",
		"Explain gravity in one sentence.",
	}
	var reqs []engine.Request
	for _, s := range texts {
		reqs = append(reqs, engine.Request{Tokens: chatPrompt(t, m, s), Params: greedy(8)})
	}
	sc := scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}
	var alone [][]int32
	for _, r := range reqs {
		alone = append(alone, run(t, startReal(t, m, 64, sc, kernels.KVF16), []engine.Request{r})[0])
	}
	got := run(t, startReal(t, m, 64, sc, kernels.KVF16), reqs)
	if diff := cmp.Diff(alone, got); diff != "" {
		t.Errorf("batched greedy outputs differ from solo runs (-alone +batched):\n%s", diff)
	}
	for i, toks := range got {
		t.Logf("%q -> %q", texts[i], m.Tokenizer.Decode(toks))
	}
}

// TestRealModelInt8KV reports the int8 KV format's cost against f16 on the
// default model, teacher-forced over a fixed text: every position's logits
// with each format, their largest and mean absolute difference, the KL
// divergence of the next-token distributions and how often the top token
// agrees.
func TestRealModelInt8KV(t *testing.T) {
	m := openReal(t)
	text := "The quick brown fox jumps over the lazy dog. Paged attention stores keys and values in fixed-size blocks, " +
		"so memory is allocated on demand and shared between sequences that start with the same prompt. " +
		"Continuous batching lets new requests join a running batch at every step."
	toks := m.Tokenizer.Encode(text, tokenizer.EncodeOptions{AddBOS: m.Tokenizer.AddBOS()})
	mc := m.Llama.Config()
	var rows [2][][]float32
	for i, dt := range []kernels.KVDType{kernels.KVF16, kernels.KVInt8} {
		c, err := m.Llama.Backend().NewKVCache(mc.KVSpec(16, 16, dt))
		if err != nil {
			t.Fatal(err)
		}
		rows[i] = forwardAll(t, m.Llama, c, toks)
		c.Close()
	}
	agree, maxD, sumD, kl := 0, 0.0, 0.0, 0.0
	for p := range toks {
		a, b := rows[0][p], rows[1][p]
		if argmax(a) == argmax(b) {
			agree++
		}
		d := maxAbsDiff(a, b)
		maxD = math.Max(maxD, d)
		sumD += meanAbsDiff(a, b)
		kl += klDiv(a, b)
	}
	n := float64(len(toks))
	t.Logf("int8 vs f16 KV over %d positions: top-1 agreement %.1f%%, max |Δlogit| %.3f, mean |Δlogit| %.4f, mean KL %.5f nats",
		len(toks), 100*float64(agree)/n, maxD, sumD/n, kl/n)
	if float64(agree)/n < 0.85 {
		t.Errorf("int8 KV agrees with f16 on only %d of %d top tokens", agree, len(toks))
	}
}

// forwardAll returns the logits of every position of tokens in one pass.
func forwardAll(t testing.TB, m *llama.Model, c kernels.KVCache, tokens []int32) [][]float32 {
	t.Helper()
	bs := c.Spec().BlockSize
	table := make([]int32, (len(tokens)+bs-1)/bs)
	for i := range table {
		table[i] = int32(len(table) - 1 - i)
	}
	var b llama.Batch
	for p, tok := range tokens {
		b.Tokens = append(b.Tokens, tok)
		b.Positions = append(b.Positions, int32(p))
		b.Slots = append(b.Slots, table[p/bs]*int32(bs)+int32(p%bs))
		b.LogitRows = append(b.LogitRows, int32(p))
	}
	b.Seqs = []kernels.AttnSeq{{QueryLen: len(tokens), KVLen: len(tokens), Blocks: table}}
	logits, err := m.Forward(context.Background(), c, &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := m.Config().Vocab
	out := make([][]float32, len(tokens))
	for i := range out {
		out[i] = logits[i*v : (i+1)*v]
	}
	return out
}

func meanAbsDiff(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += math.Abs(float64(a[i] - b[i]))
	}
	return s / float64(len(a))
}

// klDiv is KL(softmax(p) || softmax(q)) in nats.
func klDiv(p, q []float32) float64 {
	lse := func(x []float32) float64 {
		mx := float64(x[argmax(x)])
		var s float64
		for _, v := range x {
			s += math.Exp(float64(v) - mx)
		}
		return mx + math.Log(s)
	}
	lp, lq := lse(p), lse(q)
	var kl float64
	for i := range p {
		a := float64(p[i]) - lp
		kl += math.Exp(a) * (a - (float64(q[i]) - lq))
	}
	return kl
}

// TestEngineBenchRealModel prints the full engine benchmark report (batch
// 1/4/16/32, 1,000-token TTFT) for $TANDEM_MODEL on the CPU backend; set
// TANDEM_ENGINE_BENCH=1 (it takes minutes on two cores).
func TestEngineBenchRealModel(t *testing.T) {
	if os.Getenv("TANDEM_ENGINE_BENCH") != "1" {
		t.Skip("benchmark run: set TANDEM_ENGINE_BENCH=1")
	}
	logBench(t, openReal(t).Llama)
}

// TestRealModelPagedMatchesContiguous repeats the block-table check of
// TestPagedMatchesContiguous on the default model and the CPU backend's
// paged attention kernel: scattered blocks, a cached prefix plus new tokens,
// and single decode steps all give the logits of one contiguous pass.
func TestRealModelPagedMatchesContiguous(t *testing.T) {
	m := openReal(t)
	mc := m.Llama.Config()
	toks := chatPrompt(t, m, "Paged attention splits the KV cache into blocks; explain why in two sentences.")
	newCache := func(blocks, bs int) kernels.KVCache {
		c, err := m.Llama.Backend().NewKVCache(mc.KVSpec(blocks, bs, kernels.KVF16))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	contiguous := pagedRun(t, m.Llama, newCache(1, 128), []int32{0}, toks, []int{len(toks)})
	n := len(toks)
	if n < 33 || n > 96 {
		t.Fatalf("prompt of %d tokens does not fit the test's tables (33 to 96)", n)
	}
	tests := []struct {
		name   string
		bs     int
		table  []int32
		chunks []int
	}{
		{"scattered blocks of 16", 16, []int32{5, 1, 7, 3, 0, 6}, []int{n}},
		{"cached prefix plus new tokens", 16, []int32{5, 1, 7, 3, 0, 6}, []int{32, n - 32}},
		{"prefix ends mid-block, then decodes", 16, []int32{5, 1, 7, 3, 0, 6}, []int{21, n - 24, 1, 1, 1}},
		{"blocks of 4, reversed", 4, reversed(32), []int{n - 5, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pagedRun(t, m.Llama, newCache(32, tc.bs), tc.table, toks, tc.chunks)
			d := maxAbsDiff(contiguous, got)
			t.Logf("max |Δlogit| = %g", d)
			if d > 1e-2 {
				t.Errorf("paged logits differ from contiguous by %g", d)
			}
			if argmax(got) != argmax(contiguous) {
				t.Errorf("argmax %d, contiguous %d", argmax(got), argmax(contiguous))
			}
		})
	}
}
