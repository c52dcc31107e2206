package engine_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testTimeout = 60 * time.Second

// tiny returns the 2-layer random-weight test model on the reference backend.
func tiny(t testing.TB) *llama.Model {
	t.Helper()
	cfg := llamatest.TinyConfig()
	src, err := llamatest.Random(cfg, quant.F32, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.New(cfg, ref.New(), src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type setup struct {
	blocks    int
	blockSize int
	dtype     kernels.KVDType
	sched     scheduler.Config
	noPrefix  bool
}

func defaultSetup() setup {
	return setup{blocks: 64, blockSize: 4, sched: scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}}
}

// start builds and starts an engine for m; Close and the leak check run at
// cleanup.
func start(t testing.TB, m *llama.Model, s setup) *engine.Engine {
	t.Helper()
	mc := m.Config()
	cache, err := m.Backend().NewKVCache(mc.KVSpec(s.blocks, s.blockSize, s.dtype))
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Scheduler = s.sched
	cfg.Scheduler.MaxSeqLen = mc.ContextLength
	cfg.Vocab = mc.Vocab
	cfg.ModelID = mc.Name
	cfg.PrefixCaching = !s.noPrefix
	e, err := engine.New(cfg, m, cache)
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
		if err := e.BlockManager().CheckInvariants(); err != nil {
			t.Error(err)
		}
		if st := e.BlockManager().Stats(); st.Held != 0 {
			t.Errorf("blocks still held after Close: %+v", st)
		}
		cache.Close()
	})
	return e
}

func greedy(n int) sample.Params {
	p := sample.DefaultParams()
	p.MaxTokens = n
	p.RepetitionPenalty = 1
	return p
}

func prompts() [][]int32 {
	return [][]int32{
		{5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 71},
		{1, 2, 3},
		{90, 80, 70, 60, 50, 40, 30, 20, 10, 5, 4, 3, 2, 1, 0, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21},
		{7},
		{5, 17, 3, 88, 42, 42, 9, 60, 1, 33, 72, 73}, // shares a prefix with the first
	}
}

func run(t testing.TB, e *engine.Engine, reqs []engine.Request) [][]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	hs := make([]*engine.Handle, len(reqs))
	for i, r := range reqs {
		h, err := e.Add(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = h
	}
	out := make([][]int32, len(reqs))
	for i, h := range hs {
		toks, _, err := h.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = toks
	}
	return out
}

func requests(n int) []engine.Request {
	var reqs []engine.Request
	for _, p := range prompts() {
		reqs = append(reqs, engine.Request{Tokens: p, Params: greedy(n)})
	}
	return reqs
}

// TestBatchedEqualsAlone: greedy outputs of sequences run together equal each
// sequence run alone in a fresh engine, across cache layouts that force
// chunked prefill, prefix reuse and preemption.
func TestBatchedEqualsAlone(t *testing.T) {
	m := tiny(t)
	reqs := requests(12)
	var alone [][]int32
	for _, r := range reqs {
		alone = append(alone, run(t, start(t, m, defaultSetup()), []engine.Request{r})[0])
	}
	tests := []struct {
		name           string
		s              setup
		wantPreemption bool
	}{
		{"roomy", defaultSetup(), false},
		{"small chunks and budget", setup{blocks: 64, blockSize: 4, sched: scheduler.Config{MaxSeqs: 3, MaxTokens: 5, ChunkSize: 3}}, false},
		{"block size one", setup{blocks: 256, blockSize: 1, sched: scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}}, false},
		{"no prefix cache", setup{blocks: 64, blockSize: 4, sched: scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}, noPrefix: true}, false},
		{"memory pressure preempts", setup{blocks: 12, blockSize: 4, sched: scheduler.Config{MaxSeqs: 8, MaxTokens: 64, ChunkSize: 16}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, m, tc.s)
			got := run(t, e, reqs)
			if diff := cmp.Diff(alone, got); diff != "" {
				t.Errorf("batched outputs differ from solo runs (-alone +batched):\n%s", diff)
			}
			if l := e.Load(); (l.Preemptions > 0) != tc.wantPreemption {
				t.Errorf("preemptions = %d, want some: %v", l.Preemptions, tc.wantPreemption)
			}
		})
	}
}

func TestPrefixCacheReuse(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	p := prompts()[2] // 26 tokens: 6 full blocks of 4 are reusable
	first := run(t, e, []engine.Request{{Tokens: p, Params: greedy(5)}})
	before := e.Load()
	second := run(t, e, []engine.Request{{Tokens: p, Params: greedy(5)}})
	after := e.Load()
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("cached run differs (-cold +cached):\n%s", diff)
	}
	if hits := after.PrefixHits - before.PrefixHits; hits != 6 {
		t.Errorf("prefix hits = %d blocks, want 6", hits)
	}
	if pt := after.PromptTokens - before.PromptTokens; pt >= uint64(len(p)) {
		t.Errorf("cached run computed %d prompt tokens, want fewer than %d", pt, len(p))
	}
}

func TestRejects(t *testing.T) {
	m := tiny(t)
	e := start(t, m, setup{blocks: 4, blockSize: 4, sched: scheduler.Config{MaxSeqs: 2, MaxTokens: 8, ChunkSize: 8}})
	bad := greedy(0)
	tests := []struct {
		name    string
		req     engine.Request
		wantErr error
	}{
		{"prompt larger than the whole cache", engine.Request{Tokens: make([]int32, 17), Params: greedy(1)}, engine.ErrTooLarge},
		{"empty prompt", engine.Request{Params: greedy(1)}, engine.ErrInvalidRequest},
		{"token outside vocabulary", engine.Request{Tokens: []int32{96}, Params: greedy(1)}, engine.ErrInvalidRequest},
		{"negative token", engine.Request{Tokens: []int32{-1}, Params: greedy(1)}, engine.ErrInvalidRequest},
		{"invalid params", engine.Request{Tokens: []int32{1}, Params: bad}, sample.ErrInvalidParams},
		{"generated covers prompt", engine.Request{Tokens: []int32{1}, Params: greedy(3), Generated: 1}, engine.ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.Add(context.Background(), tc.req); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestCancelFreesBlocks(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := e.Add(ctx, engine.Request{Tokens: prompts()[0], Params: greedy(400)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Next(ctx); err != nil {
		t.Fatal(err)
	}
	h.Cancel()
	for {
		if _, err := h.Next(ctx); err != nil {
			if !errors.Is(err, engine.ErrCancelled) {
				t.Fatalf("stream ended with %v, want ErrCancelled", err)
			}
			break
		}
	}
	waitFor(t, func() bool { return e.BlockManager().Stats().Held == 0 })
	if l := e.Load(); l.Running != 0 || l.Waiting != 0 {
		t.Errorf("load after cancel: %+v", l)
	}
}

func TestStopAndCancelEndings(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	tests := []struct {
		name       string
		end        func(h *engine.Handle)
		wantErr    error
		wantReason sample.FinishReason
	}{
		{"stop ends normally", (*engine.Handle).Stop, nil, sample.FinishStop},
		{"cancel ends with ErrCancelled", (*engine.Handle).Cancel, engine.ErrCancelled, sample.FinishNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			h, err := e.Add(ctx, engine.Request{Tokens: prompts()[0], Params: greedy(400)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Next(ctx); err != nil {
				t.Fatal(err)
			}
			tc.end(h)
			_, _, err = h.Collect(ctx)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Collect err = %v, want %v", err, tc.wantErr)
			}
			if done, reason, _ := h.Finish(); !done || reason != tc.wantReason {
				t.Errorf("Finish = %v, %q; want done, %q", done, reason, tc.wantReason)
			}
			waitFor(t, func() bool { return e.BlockManager().Stats().Held == 0 })
		})
	}
}

func TestContextCancelsRequest(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	reqCtx, cancelReq := context.WithCancel(context.Background())
	h, err := e.Add(reqCtx, engine.Request{Tokens: prompts()[1], Params: greedy(400)})
	if err != nil {
		t.Fatal(err)
	}
	cancelReq()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, _, err := h.Collect(ctx); !errors.Is(err, engine.ErrCancelled) {
		t.Fatalf("err = %v, want ErrCancelled", err)
	}
	waitFor(t, func() bool { return e.BlockManager().Stats().Held == 0 })
}

func TestCloseEndsStreams(t *testing.T) {
	m := tiny(t)
	mc := m.Config()
	cache, err := m.Backend().NewKVCache(mc.KVSpec(64, 4, kernels.KVF16))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	cfg := engine.DefaultConfig()
	cfg.Vocab = mc.Vocab
	e, err := engine.New(cfg, m, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	h, err := e.Add(context.Background(), engine.Request{Tokens: prompts()[0], Params: greedy(500)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, _, err := h.Collect(ctx); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("stream after Close: %v, want ErrClosed", err)
	}
	if _, err := e.Add(ctx, engine.Request{Tokens: []int32{1}, Params: greedy(1)}); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
	if st := e.BlockManager().Stats(); st.Held != 0 {
		t.Errorf("blocks held after Close: %+v", st)
	}
}

func TestStopTokenAndLength(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	free := run(t, e, []engine.Request{{Tokens: prompts()[0], Params: greedy(6)}})[0]
	// Stop at the first token that differs from the ones before it.
	k := 1
	for k < len(free) && slices.Contains(free[:k], free[k]) {
		k++
	}
	if k == len(free) {
		t.Skipf("greedy output %v repeats one token; no stop token to test", free)
	}
	p := greedy(6)
	p.StopTokenIDs = []int32{free[k]}
	h, err := e.Add(ctx, engine.Request{Tokens: prompts()[0], Params: p})
	if err != nil {
		t.Fatal(err)
	}
	got, reason, err := h.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(free[:k], got); diff != "" || reason != sample.FinishStop {
		t.Errorf("stop token: reason %q, tokens (-want +got):\n%s", reason, diff)
	}
	h, err = e.Add(ctx, engine.Request{Tokens: prompts()[0], Params: greedy(6)})
	if err != nil {
		t.Fatal(err)
	}
	if _, reason, _ = h.Collect(ctx); reason != sample.FinishLength {
		t.Errorf("reason %q, want length", reason)
	}
	if _, err := h.Next(ctx); err != io.EOF {
		t.Errorf("Next after the end: %v, want io.EOF", err)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestOpenSizesCache(t *testing.T) {
	m := tiny(t)
	mc := m.Config()
	perBlock := int64(mc.KVSpec(1, 4, kernels.KVF16).BlockBytes()) * int64(mc.Layers)
	tests := []struct {
		name       string
		co         engine.CacheOptions
		wantBlocks int
		wantErr    bool
	}{
		{"bytes", engine.CacheOptions{Bytes: 10*perBlock + 5, BlockSize: 4}, 10, false},
		{"int8 fits more", engine.CacheOptions{Bytes: 10 * perBlock, BlockSize: 4, DType: kernels.KVInt8}, 16, false},
		{"too small", engine.CacheOptions{Bytes: perBlock - 1, BlockSize: 4}, 0, true},
		{"bad fraction", engine.CacheOptions{Fraction: 2, BlockSize: 4}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := engine.DefaultConfig()
			cfg.Scheduler = defaultSetup().sched
			e, err := engine.Open(cfg, m, tc.co)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if err := e.Start(); err != nil {
				t.Fatal(err)
			}
			if got := e.Load().TotalBlocks; got != tc.wantBlocks {
				t.Errorf("blocks = %d, want %d", got, tc.wantBlocks)
			}
			out := run(t, e, []engine.Request{{Tokens: prompts()[1], Params: greedy(3)}})
			if len(out[0]) != 3 {
				t.Errorf("generated %v, want 3 tokens", out[0])
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
