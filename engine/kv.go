package engine

import (
	"context"
	"fmt"
)

// Allocate reserves n blocks for the transport (destination blocks of an
// incoming transfer); the caller owns them until it passes them to
// AddPrefilled or releases them with Free. It fails with
// kvcache.ErrOutOfBlocks rather than preempting running sequences.
func (e *Engine) Allocate(ctx context.Context, n int) ([]int32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := e.kv.Allocate(n)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return b, nil
}

// Free releases blocks obtained from Allocate, TakeKV or PinKV, and wakes the
// loop in case requests wait for memory. Releasing blocks the caller does not
// hold is a bug; it is logged and changes nothing.
func (e *Engine) Free(blocks []int32) {
	if err := e.kv.Free(blocks); err != nil {
		e.log.Error("engine: free blocks", "err", err)
		return
	}
	e.kick()
}

// PinKV takes a reference on the full blocks of h's computed tokens, so they
// can be read (exported) from another goroutine while the request keeps
// running or after it ends: full blocks are never written again, whereas the
// block holding the newest tokens is, by every step. It returns those blocks
// and the number of tokens they hold (a multiple of the block size, possibly
// zero); the caller releases them with Free. For the whole KV of a finished
// request use Request.KeepKV and Handle.TakeKV.
func (e *Engine) PinKV(h *Handle) (blocks []int32, tokens int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	q := h.seq
	if e.handles[q] != h {
		return nil, 0, fmt.Errorf("%w: request %d is not running", ErrInvalidRequest, q.ID)
	}
	full := q.Computed / e.kv.BlockSize()
	blocks = append([]int32(nil), q.Table.Blocks()[:full]...)
	if err := e.kv.Retain(blocks); err != nil {
		return nil, 0, fmt.Errorf("engine: pin request %d: %w", q.ID, err)
	}
	return blocks, full * e.kv.BlockSize(), nil
}

// AddPrefilled queues a request whose first computed tokens already have
// their keys and values in blocks (from Allocate, filled through the
// transport). req.Tokens is the prompt followed by the req.Generated tokens
// produced by the prefill; the first computed tokens must be prompt tokens,
// and the engine continues from there. On success the engine owns the blocks;
// on error the caller still does.
func (e *Engine) AddPrefilled(ctx context.Context, req Request, blocks []int32, computed int) (*Handle, error) {
	if computed < 1 || computed >= len(req.Tokens) {
		return nil, fmt.Errorf("%w: %d computed tokens of %d", ErrInvalidRequest, computed, len(req.Tokens))
	}
	if need := e.kv.BlocksFor(computed); len(blocks) < need {
		return nil, fmt.Errorf("%w: %d computed tokens need %d blocks, got %d", ErrInvalidRequest, computed, need, len(blocks))
	}
	for _, b := range blocks {
		if e.kv.Refs(b) < 1 {
			return nil, fmt.Errorf("%w: block %d is not allocated", ErrInvalidRequest, b)
		}
	}
	return e.add(ctx, req, blocks, computed)
}
