package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/engine/scheduler"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model/llama"
)

// loop is the engine's only goroutine: plan, run, sample, repeat.
func (e *Engine) loop(ctx context.Context) {
	defer close(e.done)
	var b llama.Batch
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		e.mu.Lock()
		plan, err := e.sched.Schedule()
		if err != nil {
			// A bookkeeping error cannot be retried safely: fail everything.
			e.failAllLocked(fmt.Errorf("engine: schedule: %w", err))
			e.mu.Unlock()
			continue
		}
		if len(plan.Work) == 0 {
			waiting := !e.sched.Idle()
			e.mu.Unlock()
			// Waiting requests may be blocked on memory that the
			// transport returns without telling us: poll while any wait.
			var tick <-chan time.Time
			if waiting {
				timer.Reset(e.cfg.IdleWait)
				tick = timer.C
			}
			select {
			case <-ctx.Done():
			case <-e.wake:
			case <-tick:
			}
			continue
		}
		e.buildBatch(&b, plan)
		onLayer := e.layerHook(plan)
		for _, w := range plan.Work {
			e.handles[w.Seq].inFlight = true
		}
		e.mu.Unlock()

		start := time.Now()
		logits, err := e.model.Forward(ctx, e.cache, &b, onLayer)
		elapsed := time.Since(start)

		e.mu.Lock()
		e.finishStep(plan, logits, err, elapsed)
		e.mu.Unlock()
	}
}

// layerHook returns the forward pass's per-layer callback, which reports the
// stored layer to every request of the plan that asked for layer events, or
// nil when none did. It captures the handlers and ranges under the engine
// lock, so the callback reads no engine state during the pass.
func (e *Engine) layerHook(plan scheduler.Plan) func(int) {
	type target struct {
		fn       func(LayerEvent)
		from, to int
		blocks   []int32
	}
	var ts []target
	for _, w := range plan.Work {
		if h := e.handles[w.Seq]; h.onLayer != nil {
			ts = append(ts, target{h.onLayer, w.Start, w.Start + w.N, w.Seq.Table.Blocks()})
		}
	}
	if len(ts) == 0 {
		return nil
	}
	return func(layer int) {
		for _, t := range ts {
			t.fn(LayerEvent{Layer: layer, From: t.from, To: t.to, Blocks: t.blocks})
		}
	}
}

// buildBatch packs the plan's tokens into one batch: the rows of each
// sequence are contiguous, their slots come from the block table, and the
// last row of every sequence that reaches its newest token asks for logits.
func (e *Engine) buildBatch(b *llama.Batch, plan scheduler.Plan) {
	bs := e.kv.BlockSize()
	b.Tokens, b.Positions, b.Slots = b.Tokens[:0], b.Positions[:0], b.Slots[:0]
	b.Seqs, b.LogitRows = b.Seqs[:0], b.LogitRows[:0]
	for _, w := range plan.Work {
		q := w.Seq
		row := len(b.Tokens)
		for p := w.Start; p < w.Start+w.N; p++ {
			b.Tokens = append(b.Tokens, q.Tokens[p])
			b.Positions = append(b.Positions, int32(p))
			b.Slots = append(b.Slots, q.Table.Slot(p, bs))
		}
		b.Seqs = append(b.Seqs, kernels.AttnSeq{QueryStart: row, QueryLen: w.N, KVLen: w.Start + w.N, Blocks: q.Table.Blocks()})
		if w.Logits {
			b.LogitRows = append(b.LogitRows, int32(len(b.Tokens)-1))
		}
	}
}

// finishStep applies a step's results: on success the computed tokens are
// recorded, next tokens sampled and streamed; on failure the step's requests
// fail. Cancellations that waited for the step are completed.
func (e *Engine) finishStep(plan scheduler.Plan, logits []float32, stepErr error, elapsed time.Duration) {
	defer func() {
		for _, w := range plan.Work {
			h := e.handles[w.Seq]
			if h == nil {
				continue
			}
			h.inFlight = false
			if h.cancelled {
				if err := e.removeLocked(w.Seq); err != nil {
					e.log.Error("engine: free cancelled request", "id", w.Seq.ID, "err", err)
				}
			}
		}
	}()
	rows := 0
	for _, w := range plan.Work {
		if w.Logits {
			rows++
		}
	}
	if stepErr == nil && len(logits) != rows*e.cfg.Vocab {
		stepErr = fmt.Errorf("engine: model returned %d logits for %d rows of %d", len(logits), rows, e.cfg.Vocab)
	}
	if stepErr != nil {
		if errors.Is(stepErr, context.Canceled) {
			return // Close: the streams end with ErrClosed
		}
		e.log.Error("engine: forward pass failed", "err", stepErr, "seqs", len(plan.Work))
		for _, w := range plan.Work {
			if h := e.handles[w.Seq]; h != nil && !h.cancelled {
				h.finish(sample.FinishNone, fmt.Errorf("engine: forward pass: %w", stepErr))
				h.cancelled = true // free after the deferred in-flight reset
			}
		}
		return
	}
	e.sched.Complete(plan)
	decoded := 0
	row := 0
	for _, w := range plan.Work {
		if !w.Logits {
			continue
		}
		l := logits[row*e.cfg.Vocab : (row+1)*e.cfg.Vocab]
		row++
		h := e.handles[w.Seq]
		if h == nil || h.cancelled {
			continue
		}
		decoded++
		e.advanceLocked(h, l)
	}
	e.meter.add(time.Now(), decoded, plan.Tokens-decoded, elapsed)
}

// advanceLocked samples h's next token from its logits, streams it and
// finishes the request when a stop condition holds.
func (e *Engine) advanceLocked(h *Handle, logits []float32) {
	t := h.sampler.Sample(logits)
	h.sampler.Accept(t)
	h.generated++
	q := h.seq
	q.Tokens = append(q.Tokens, t)
	reason := h.params.CheckToken(t, h.generated, e.cfg.IsEOG)
	if reason != sample.FinishStop {
		// Stop tokens end the stream without being part of the text.
		h.push(t)
	}
	if reason == sample.FinishNone && len(q.Tokens) > e.sched.Capacity() {
		reason = sample.FinishLength
	}
	if reason == sample.FinishNone {
		return
	}
	if h.kept == nil && h.keepKV {
		h.keptLen = q.Computed
		h.kept = append([]int32(nil), q.Table.Blocks()...)
		if err := e.kv.Retain(h.kept); err != nil {
			e.log.Error("engine: keep KV", "id", q.ID, "err", err)
			h.kept = nil
		}
	}
	h.finish(reason, nil)
	if err := e.removeLocked(q); err != nil {
		e.log.Error("engine: free finished request", "id", q.ID, "err", err)
	}
}

func (e *Engine) failAllLocked(err error) {
	for q, h := range e.handles {
		h.finish(sample.FinishNone, err)
		if h.inFlight {
			h.cancelled = true
			continue
		}
		if rerr := e.removeLocked(q); rerr != nil {
			e.log.Error("engine: free failed request", "id", q.ID, "err", rerr)
		}
	}
}
