package engine_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/kvcache"
	"github.com/tandemserve/tandem/engine/scheduler"
)

// TestStressNoLeakedBlocks mixes finished, cancelled, preempted, kept and
// pinned requests and transport allocations on a cache small enough to force
// preemption, from several goroutines, and checks that once every stream has
// ended and every caller-held block is freed, no block is held.
func TestStressNoLeakedBlocks(t *testing.T) {
	m := tiny(t)
	e := start(t, m, setup{blocks: 12, blockSize: 4, sched: scheduler.Config{MaxSeqs: 6, MaxTokens: 24, ChunkSize: 8}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- client(ctx, e, rand.New(rand.NewPCG(uint64(w), 11)), 25)
		}()
	}
	wg.Add(1)
	go func() { // the transport: reserve and release blocks
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, 1))
		for range 40 {
			b, err := e.Allocate(ctx, 1+r.IntN(4))
			if err != nil && !errors.Is(err, kvcache.ErrOutOfBlocks) {
				errs <- err
				return
			}
			if err == nil {
				e.Free(b)
			}
		}
		errs <- nil
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return e.BlockManager().Stats().Held == 0 })
	if err := e.BlockManager().CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	l := e.Load()
	t.Logf("load after stress: %+v", l)
	if l.Preemptions == 0 {
		t.Error("no preemptions: the cache is not small enough to exercise them")
	}
}

// client runs requests one after another and ends each in a random way:
// callers hold kept and pinned blocks only briefly, as the transport does.
func client(ctx context.Context, e *engine.Engine, r *rand.Rand, n int) error {
	base := prompts()
	for range n {
		p := base[r.IntN(len(base))]
		p = append(append([]int32(nil), p...), int32(r.IntN(90)))
		req := engine.Request{Tokens: p, Params: greedy(1 + r.IntN(12)), Priority: r.IntN(3), KeepKV: r.IntN(4) == 0}
		h, err := e.Add(ctx, req)
		if err != nil {
			return err
		}
		switch r.IntN(4) {
		case 0: // cancel at once
			h.Cancel()
		case 1: // read a token, then cancel
			if _, err := h.Next(ctx); err != nil && !errors.Is(err, engine.ErrCancelled) {
				return err
			}
			h.Cancel()
		case 2: // export while running: pin, read a token, release
			if b, _, err := e.PinKV(h); err == nil {
				if _, err := h.Next(ctx); err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				e.Free(b)
			}
		}
		if _, _, err := h.Collect(ctx); err != nil && !errors.Is(err, engine.ErrCancelled) {
			return err
		}
		if b, _, ok := h.TakeKV(); ok {
			e.Free(b)
		}
	}
	return nil
}
