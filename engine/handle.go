package engine

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/engine/scheduler"
)

// Handle is one request's token stream. Next may be called by one consumer
// goroutine; Cancel, Finish and TakeKV from any goroutine.
type Handle struct {
	e      *Engine
	seq    *scheduler.Seq
	params sample.Params

	// Guarded by e.mu: the loop's view of the request.
	sampler   *sample.Sampler
	generated int
	inFlight  bool // a step that writes the sequence's blocks is running
	cancelled bool // cancelled while in flight: free after the step
	keepKV    bool
	onLayer   func(LayerEvent)
	kept      []int32
	keptLen   int
	stopCtx   func() bool

	mu     sync.Mutex
	queue  []int32
	done   bool
	reason sample.FinishReason
	err    error
	notify chan struct{} // capacity 1: tokens or the end arrived
	added  time.Time
	first  time.Time
	ended  time.Time
}

func newHandle(e *Engine, q *scheduler.Seq, smp *sample.Sampler, req Request) *Handle {
	return &Handle{
		e: e, seq: q, params: req.Params, sampler: smp, generated: req.Generated, keepKV: req.KeepKV, onLayer: req.OnLayer,
		notify: make(chan struct{}, 1), added: time.Now(),
	}
}

// ID is the engine-assigned request id.
func (h *Handle) ID() uint64 { return h.seq.ID }

// Next returns the next generated token, waiting for it. After the last
// token it returns io.EOF when the request finished normally (see Finish for
// why), ErrCancelled, ErrClosed, or the error that failed the request.
func (h *Handle) Next(ctx context.Context) (int32, error) {
	for {
		h.mu.Lock()
		if len(h.queue) > 0 {
			t := h.queue[0]
			h.queue = h.queue[1:]
			h.mu.Unlock()
			return t, nil
		}
		if h.done {
			err := h.err
			h.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		h.mu.Unlock()
		select {
		case <-h.notify:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Finish reports whether the request ended, why, and its error if it failed.
func (h *Handle) Finish() (done bool, reason sample.FinishReason, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done, h.reason, h.err
}

// Timing returns when the request was added, produced its first token and
// ended (zero times for events that did not happen yet).
func (h *Handle) Timing() (added, first, ended time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.added, h.first, h.ended
}

// Cancel ends the request: its stream returns ErrCancelled after any tokens
// already queued, and its blocks are freed at once, or right after the step
// in flight. Cancelling a finished request does nothing.
func (h *Handle) Cancel() {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	h.e.cancelLocked(h, sample.FinishNone, ErrCancelled)
}

// Stop ends the request normally with FinishStop, for stop conditions the
// caller detects itself (stop strings on decoded text): the stream ends with
// io.EOF after the queued tokens and the blocks are freed as by Cancel.
func (h *Handle) Stop() {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	h.e.cancelLocked(h, sample.FinishStop, nil)
}

// TakeKV hands a finished KeepKV request's blocks to the caller, who must
// release them with Engine.Free. It returns the block table and the number of
// leading tokens whose keys and values they hold; ok is false when there is
// nothing to take (not finished, not KeepKV, failed, or taken already).
func (h *Handle) TakeKV() (blocks []int32, tokens int, ok bool) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if h.kept == nil {
		return nil, 0, false
	}
	blocks, tokens = h.kept, h.keptLen
	h.kept = nil
	return blocks, tokens, true
}

func (h *Handle) push(t int32) {
	h.mu.Lock()
	if h.first.IsZero() {
		h.first = time.Now()
	}
	h.queue = append(h.queue, t)
	h.mu.Unlock()
	h.signal()
}

// finish ends the stream once; later calls do nothing.
func (h *Handle) finish(reason sample.FinishReason, err error) {
	h.mu.Lock()
	if h.done {
		h.mu.Unlock()
		return
	}
	h.done, h.reason, h.err, h.ended = true, reason, err, time.Now()
	h.mu.Unlock()
	if h.stopCtx != nil {
		h.stopCtx()
	}
	h.signal()
}

func (h *Handle) finished() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

func (h *Handle) signal() {
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// Collect reads the whole stream: every token, then the finish reason. It
// returns the tokens received so far with any error other than io.EOF.
func (h *Handle) Collect(ctx context.Context) ([]int32, sample.FinishReason, error) {
	var out []int32
	for {
		t, err := h.Next(ctx)
		if err == io.EOF {
			_, reason, _ := h.Finish()
			return out, reason, nil
		}
		if err != nil {
			return out, sample.FinishNone, fmt.Errorf("engine: request %d: %w", h.ID(), err)
		}
		out = append(out, t)
	}
}
