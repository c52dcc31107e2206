// Package engine runs many generation requests at once on one model and one
// paged KV cache: it is what a prefill or decode worker drives.
//
// The Engine owns one step loop goroutine (Start, joined by Close). Each step
// it asks the scheduler (engine/scheduler) which sequences run and how many of
// their tokens to compute, packs all of them into one llama.Batch (so every
// weight matrix is multiplied once per step by a matrix of token rows, never
// once per sequence), runs the model's forward pass over the paged cache,
// samples the next token of every sequence whose newest token was computed,
// and streams it to the request's Handle. Sequences join and leave at every
// step. The block bookkeeping, prefix cache and memory budget live in
// engine/kvcache; the KV bytes live in the backend's kernels.KVCache.
//
// Ownership: the step loop releases the engine lock while the forward pass
// runs, and only the loop changes block tables. A request cancelled while its
// step is in flight is finished at once (its stream ends), and its blocks are
// freed as soon as that step returns, never while the kernels may still write
// them. Blocks handed out by Allocate, TakeKV or PinKV belong to the caller
// until it calls Free.
//
// Streams never block the loop: tokens queue on the Handle (at most MaxTokens
// of them) and the consumer pulls them with Next.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandemserve/tandem/engine/kvcache"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model/llama"
)

var (
	// ErrClosed reports a call on a closed engine, and ends the streams of
	// requests still running when it closed.
	ErrClosed = errors.New("engine: closed")
	// ErrCancelled ends the stream of a cancelled request.
	ErrCancelled = errors.New("engine: request cancelled")
	// ErrInvalidRequest reports a request the engine cannot run.
	ErrInvalidRequest = errors.New("engine: invalid request")
	// ErrInvalidConfig reports a bad Config.
	ErrInvalidConfig = errors.New("engine: invalid config")
	// ErrTooLarge reports a prompt that could never fit in the KV cache or
	// the context window.
	ErrTooLarge = scheduler.ErrTooLarge
)

// Model is the forward pass the engine drives.
type Model interface {
	// Forward computes b's tokens over cache and returns the logits of
	// b.LogitRows, row after row. onLayer, when set, runs after each layer's
	// keys and values are stored. Called from the step loop only.
	Forward(ctx context.Context, cache kernels.KVCache, b *llama.Batch, onLayer func(layer int)) ([]float32, error)
}

var _ Model = (*llama.Model)(nil)

// Config configures an Engine.
type Config struct {
	Scheduler     scheduler.Config
	ModelID       string // names the prefix hash chain (engine/blockhash)
	PrefixCaching bool
	// Vocab is the model's vocabulary size: logits rows are this long.
	Vocab int
	// IsEOG reports the model's end-of-generation tokens; nil means none.
	IsEOG func(int32) bool
	// IdleWait bounds how long the loop sleeps while requests wait for
	// memory that another component (the transport) may return.
	IdleWait time.Duration
	Logger   *slog.Logger
}

// DefaultConfig returns the default scheduler limits with prefix caching on.
// Vocab and ModelID must still be set.
func DefaultConfig() Config {
	return Config{Scheduler: scheduler.DefaultConfig(), PrefixCaching: true, IdleWait: 20 * time.Millisecond}
}

// Validate checks the config.
func (c Config) Validate() error {
	if err := c.Scheduler.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.Vocab < 1 {
		return fmt.Errorf("%w: vocabulary size %d", ErrInvalidConfig, c.Vocab)
	}
	if c.IdleWait <= 0 {
		return fmt.Errorf("%w: idle wait %v", ErrInvalidConfig, c.IdleWait)
	}
	return nil
}

// Request is one generation.
type Request struct {
	// Tokens is the prompt; for an imported sequence (AddPrefilled) it ends
	// with the Generated tokens already produced elsewhere.
	Tokens []int32
	Params sample.Params
	// Priority: higher runs first and is preempted last.
	Priority int
	// Generated counts trailing Tokens that were generated, not prompted
	// (they count toward Params.MaxTokens and are not streamed again).
	Generated int
	// KeepKV keeps the sequence's blocks when it finishes normally, for the
	// caller to take with Handle.TakeKV (a prefill worker sends them on).
	KeepKV bool
	// OnLayer, when set, is called after each layer of every step that
	// computes some of this request's tokens, once that layer's keys and
	// values are stored (layer-wise KV streaming). It runs on the step loop
	// during the forward pass: it must return quickly and must not wait for
	// the engine; it may read the blocks through Cache().
	OnLayer func(LayerEvent)
}

// LayerEvent says that one layer's keys and values of tokens [From, To) of a
// request are in the cache. Blocks is the request's block table at that
// moment (shared: read it during the call only). After a preemption the
// request is recomputed into other blocks and events restart at the
// recomputed position, so a consumer must key what it sends by block id.
type LayerEvent struct {
	Layer    int
	From, To int
	Blocks   []int32
}

// Engine schedules and runs requests. Its methods are safe for concurrent use.
type Engine struct {
	cfg   Config
	model Model
	cache kernels.KVCache
	kv    *kvcache.Manager
	log   *slog.Logger
	// ownsCache is set by Open: Close then closes the cache too.
	ownsCache bool

	mu      sync.Mutex
	sched   *scheduler.Scheduler
	handles map[*scheduler.Seq]*Handle
	nextID  uint64
	started bool
	closed  bool
	meter   meter

	wake   chan struct{} // capacity 1: a pending wake-up for the loop
	cancel context.CancelFunc
	done   chan struct{} // closed when the loop returns
}

// New returns an engine running model over cache. The engine does not own
// the model or the cache: close them after Close.
func New(cfg Config, model Model, cache kernels.KVCache) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if model == nil || cache == nil {
		return nil, fmt.Errorf("%w: nil model or cache", ErrInvalidConfig)
	}
	spec := cache.Spec()
	kv, err := kvcache.New(kvcache.Config{Blocks: spec.Blocks, BlockSize: spec.BlockSize, ModelID: cfg.ModelID, PrefixCaching: cfg.PrefixCaching})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	sched, err := scheduler.New(cfg.Scheduler, kv)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		cfg: cfg, model: model, cache: cache, kv: kv, log: log,
		sched:   sched,
		handles: make(map[*scheduler.Seq]*Handle),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		meter:   newMeter(),
	}, nil
}

// Start launches the step loop. It may be called once.
func (e *Engine) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.started {
		return fmt.Errorf("%w: started twice", ErrInvalidConfig)
	}
	e.started = true
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go e.loop(ctx)
	return nil
}

// Close stops the step loop, waits for it to return and ends every stream
// still open with ErrClosed, releasing all sequence blocks.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()
	if started {
		e.cancel()
		<-e.done
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for q, h := range e.handles {
		errs = append(errs, e.removeLocked(q))
		h.finish(sample.FinishNone, ErrClosed)
	}
	if e.ownsCache {
		errs = append(errs, e.cache.Close())
	}
	return errors.Join(errs...)
}

// Cache is the KV storage the engine computes into; the transport reads and
// writes blocks through it (kernels.KVCache's ReadBlock/WriteBlock).
func (e *Engine) Cache() kernels.KVCache { return e.cache }

// BlockManager exposes the block bookkeeping (for tests and load reports).
func (e *Engine) BlockManager() *kvcache.Manager { return e.kv }

// Add queues a request and returns the handle its tokens stream through.
// When ctx ends before the request finishes, the request is cancelled, so a
// caller can tie it to its client's context.
func (e *Engine) Add(ctx context.Context, req Request) (*Handle, error) {
	return e.add(ctx, req, nil, 0)
}

func (e *Engine) add(ctx context.Context, req Request, blocks []int32, computed int) (*Handle, error) {
	if err := req.Params.Validate(e.cfg.Vocab); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if len(req.Tokens) == 0 {
		return nil, fmt.Errorf("%w: empty prompt", ErrInvalidRequest)
	}
	if req.Generated < 0 || req.Generated >= len(req.Tokens) || req.Generated >= req.Params.MaxTokens {
		return nil, fmt.Errorf("%w: %d generated of %d tokens (max %d)", ErrInvalidRequest, req.Generated, len(req.Tokens), req.Params.MaxTokens)
	}
	for i, t := range req.Tokens {
		if t < 0 || int(t) >= e.cfg.Vocab {
			return nil, fmt.Errorf("%w: token %d at %d outside vocabulary of %d", ErrInvalidRequest, t, i, e.cfg.Vocab)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q := &scheduler.Seq{Priority: req.Priority, Tokens: append([]int32(nil), req.Tokens...), Computed: computed}
	e.kv.Adopt(&q.Table, blocks)
	smp := sample.New(req.Params)
	prompt := len(req.Tokens) - req.Generated
	smp.AcceptPrompt(req.Tokens[:prompt])
	for _, t := range req.Tokens[prompt:] {
		smp.Accept(t)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	e.nextID++
	q.ID = e.nextID
	if err := e.sched.Add(q); err != nil {
		return nil, fmt.Errorf("engine: request %d: %w", q.ID, err)
	}
	h := newHandle(e, q, smp, req)
	e.handles[q] = h
	h.stopCtx = context.AfterFunc(ctx, h.Cancel)
	e.kick()
	return h, nil
}

// kick wakes the step loop without blocking.
func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// cancelLocked ends h's request. Blocks are freed now unless a step that
// writes them is in flight, in which case the loop frees them when it returns.
func (e *Engine) cancelLocked(h *Handle, reason sample.FinishReason, err error) {
	if h.finished() {
		return
	}
	h.finish(reason, err)
	if h.inFlight {
		h.cancelled = true
		return
	}
	if err := e.removeLocked(h.seq); err != nil {
		e.log.Error("engine: free cancelled request", "id", h.seq.ID, "err", err)
	}
	e.kick()
}

// removeLocked drops a sequence from the scheduler and the handle map.
func (e *Engine) removeLocked(q *scheduler.Seq) error {
	delete(e.handles, q)
	if st := q.State(); st == scheduler.StateRunning || st == scheduler.StateWaiting {
		return e.sched.Remove(q)
	}
	return nil
}
