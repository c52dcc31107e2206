package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model/llama"
)

// BenchOptions configure RunEngineBench.
type BenchOptions struct {
	ModelID string
	// Concurrency lists the numbers of sequences decoded together.
	Concurrency []int
	// PromptTokens and DecodeTokens shape each sequence of a batch run.
	PromptTokens int
	DecodeTokens int
	// TTFTPromptTokens is the prompt length of the prefix-cache measurement.
	TTFTPromptTokens int
	// Runs per measurement; the report gives medians.
	Runs      int
	BlockSize int
	KVDType   kernels.KVDType
	Scheduler scheduler.Config
	// Text supplies prompt tokens (for instance a tokenized document); it
	// is repeated as needed. Empty means deterministic pseudo-random ids.
	Text []int32
}

// DefaultBenchOptions measures 1, 4, 16 and 32 sequences of 64 decode tokens
// and a 1,000-token prompt, three runs each.
func DefaultBenchOptions() BenchOptions {
	return BenchOptions{
		Concurrency: []int{1, 4, 16, 32}, PromptTokens: 16, DecodeTokens: 64,
		TTFTPromptTokens: 1000, Runs: 3, BlockSize: 16, Scheduler: scheduler.DefaultConfig(),
	}
}

// BenchReport is the engine section of `tandem bench engine --json`.
type BenchReport struct {
	Model       string        `json:"model"`
	BlockSize   int           `json:"block_size"`
	KVDType     string        `json:"kv_dtype"`
	Batch       []BatchResult `json:"batch"`
	PrefixCache PrefixResult  `json:"prefix_cache"`
}

// BatchResult is the aggregate decode rate of Seqs sequences decoding
// together: generated tokens after every sequence's first, divided by the
// time from the last first token to the end.
type BatchResult struct {
	Seqs             int       `json:"seqs"`
	DecodeTokensPerS float64   `json:"decode_tokens_per_s"`
	RunsTokensPerS   []float64 `json:"runs_tokens_per_s"`
	SpeedupVsBatch1  float64   `json:"speedup_vs_batch1,omitempty"`
}

// PrefixResult is time to first token for one prompt on an empty cache
// (cold) and again once its blocks are cached.
type PrefixResult struct {
	PromptTokens int     `json:"prompt_tokens"`
	ColdTTFTMs   float64 `json:"cold_ttft_ms"`
	CachedTTFTMs float64 `json:"cached_ttft_ms"`
	Speedup      float64 `json:"speedup"`
	CachedTokens int     `json:"cached_tokens"`
}

// BenchModel is a model the benchmark can run: a *llama.Model, a
// tensor-parallel *llama.TP or an opened *model.Model.
type BenchModel interface {
	Model
	Config() llama.Config
	NewKVCache(blocks, blockSize int, dtype kernels.KVDType) (kernels.KVCache, error)
}

// RunEngineBench measures continuous-batching decode throughput and the
// prefix-cache speedup of m on its backend. Each run uses a fresh engine and
// cache sized for it.
func RunEngineBench(ctx context.Context, m BenchModel, opts BenchOptions) (BenchReport, error) {
	mc := m.Config()
	if opts.Runs < 1 || opts.PromptTokens < 1 || opts.DecodeTokens < 2 || opts.TTFTPromptTokens < 2 || opts.BlockSize < 1 {
		return BenchReport{}, fmt.Errorf("%w: bench options %+v", ErrInvalidConfig, opts)
	}
	if opts.TTFTPromptTokens >= mc.ContextLength || opts.PromptTokens+opts.DecodeTokens > mc.ContextLength {
		return BenchReport{}, fmt.Errorf("%w: bench sequences exceed the context of %d", ErrInvalidConfig, mc.ContextLength)
	}
	rep := BenchReport{Model: opts.ModelID, BlockSize: opts.BlockSize, KVDType: opts.KVDType.String()}
	b := benchRunner{m: m, opts: opts}
	for _, n := range opts.Concurrency {
		if n < 1 {
			return rep, fmt.Errorf("%w: concurrency %d", ErrInvalidConfig, n)
		}
		res := BatchResult{Seqs: n}
		for range opts.Runs {
			r, err := b.decodeRate(ctx, n)
			if err != nil {
				return rep, err
			}
			res.RunsTokensPerS = append(res.RunsTokensPerS, r)
		}
		res.DecodeTokensPerS = median(res.RunsTokensPerS)
		rep.Batch = append(rep.Batch, res)
	}
	if i := slices.IndexFunc(rep.Batch, func(r BatchResult) bool { return r.Seqs == 1 }); i >= 0 && rep.Batch[i].DecodeTokensPerS > 0 {
		for j := range rep.Batch {
			rep.Batch[j].SpeedupVsBatch1 = rep.Batch[j].DecodeTokensPerS / rep.Batch[i].DecodeTokensPerS
		}
	}
	var cold, warm []float64
	for range opts.Runs {
		c, w, cached, err := b.ttft(ctx)
		if err != nil {
			return rep, err
		}
		cold, warm = append(cold, c), append(warm, w)
		rep.PrefixCache.CachedTokens = cached
	}
	rep.PrefixCache.PromptTokens = opts.TTFTPromptTokens
	rep.PrefixCache.ColdTTFTMs = median(cold)
	rep.PrefixCache.CachedTTFTMs = median(warm)
	if rep.PrefixCache.CachedTTFTMs > 0 {
		rep.PrefixCache.Speedup = rep.PrefixCache.ColdTTFTMs / rep.PrefixCache.CachedTTFTMs
	}
	return rep, nil
}

type benchRunner struct {
	m    BenchModel
	opts BenchOptions
}

// tokens returns n prompt tokens starting at offset in the token source.
func (b *benchRunner) tokens(offset, n int) []int32 {
	out := make([]int32, n)
	vocab := int32(b.m.Config().Vocab)
	for i := range out {
		if len(b.opts.Text) > 0 {
			out[i] = b.opts.Text[(offset+i)%len(b.opts.Text)]
			continue
		}
		// A fixed LCG keeps runs comparable without a shared generator.
		x := uint32(offset+i)*1664525 + 1013904223
		out[i] = int32(x>>8) % min(vocab, 1<<15)
	}
	return out
}

func (b *benchRunner) engine(tokens int) (*Engine, func(), error) {
	mc := b.m.Config()
	blocks := (tokens+b.opts.BlockSize-1)/b.opts.BlockSize + 1
	cache, err := b.m.NewKVCache(blocks, b.opts.BlockSize, b.opts.KVDType)
	if err != nil {
		return nil, nil, fmt.Errorf("engine: bench cache: %w", err)
	}
	cfg := DefaultConfig()
	cfg.Scheduler = b.opts.Scheduler
	cfg.Scheduler.MaxSeqLen = mc.ContextLength
	cfg.Vocab, cfg.ModelID = mc.Vocab, b.opts.ModelID
	e, err := New(cfg, b.m, cache)
	if err == nil {
		err = e.Start()
	}
	if err != nil {
		cache.Close()
		return nil, nil, err
	}
	return e, func() { e.Close(); cache.Close() }, nil
}

func (b *benchRunner) params(max int) sample.Params {
	p := sample.DefaultParams()
	p.MaxTokens, p.IgnoreEOS, p.RepetitionPenalty = max, true, 1
	return p
}

func (b *benchRunner) decodeRate(ctx context.Context, n int) (float64, error) {
	per := b.opts.PromptTokens + b.opts.DecodeTokens
	e, done, err := b.engine(n * per)
	if err != nil {
		return 0, err
	}
	defer done()
	hs := make([]*Handle, n)
	for i := range hs {
		if hs[i], err = e.Add(ctx, Request{Tokens: b.tokens(i*per, b.opts.PromptTokens), Params: b.params(b.opts.DecodeTokens)}); err != nil {
			return 0, err
		}
	}
	// The window runs from the first sequence's first token (prompts are
	// short and added together, so every prompt is done within a step or
	// two of it) to the last sequence's last token, and counts the tokens
	// decoded after each sequence's first. Taking both ends from the
	// handles' own timestamps keeps the measurement exact however late this
	// goroutine gets to run on a busy machine.
	var start, end time.Time
	var tokens int
	for _, h := range hs {
		got, _, err := h.Collect(ctx)
		if err != nil {
			return 0, err
		}
		_, first, ended := h.Timing()
		if start.IsZero() || first.Before(start) {
			start = first
		}
		if ended.After(end) {
			end = ended
		}
		tokens += max(len(got)-1, 0)
	}
	secs := end.Sub(start).Seconds()
	if secs <= 0 || tokens == 0 {
		return 0, fmt.Errorf("engine: bench: empty decode window for %d sequences", n)
	}
	return float64(tokens) / secs, nil
}

func (b *benchRunner) ttft(ctx context.Context) (cold, cached float64, cachedTokens int, err error) {
	prompt := b.tokens(7919, b.opts.TTFTPromptTokens)
	e, done, err := b.engine(2 * (len(prompt) + 1))
	if err != nil {
		return 0, 0, 0, err
	}
	defer done()
	var ms [2]float64
	hitsBefore := e.Load().PrefixHits
	for i := range ms {
		h, err := e.Add(ctx, Request{Tokens: prompt, Params: b.params(1)})
		if err != nil {
			return 0, 0, 0, err
		}
		if _, _, err := h.Collect(ctx); err != nil {
			return 0, 0, 0, err
		}
		added, first, _ := h.Timing()
		ms[i] = float64(first.Sub(added).Microseconds()) / 1000
	}
	cachedTokens = int(e.Load().PrefixHits-hitsBefore) * b.opts.BlockSize
	return ms[0], ms[1], cachedTokens, nil
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
