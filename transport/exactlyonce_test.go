package transport_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// Random interleavings of push, commit, claim, owner cancel, sender cancel,
// abort and lease expiry: every reservation's blocks must come back to the
// allocator exactly once (freed by the transport, or claimed by the owner
// and returned by it), and no block may be freed twice.
func TestLease_ExactlyOnceUnderRandomInterleavings(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rg := newRig(t, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			stopClock := tickClock(rg.clock, 50*time.Microsecond, ttl/7)
			const transfers = 24
			for i := range transfers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(seed, uint64(i)))
					id := fmt.Sprint("x", i)
					g := rg.grant(id, 1)
					lease, err := rg.conn.Reserve(ctx, g, 1+rnd.IntN(3))
					if err != nil {
						return // pool exhausted: nothing was allocated
					}
					pairs := make([]transport.BlockPair, len(lease.Blocks))
					for j, b := range lease.Blocks {
						pairs[j] = transport.BlockPair{Src: int32(j), Dst: b}
					}
					// Draw every choice up front: rnd is not safe for concurrent use.
					abortAt := rnd.IntN(rg.spec.Layers * 5)
					claimWait := time.Duration(rnd.IntN(2000)) * time.Microsecond
					ownerCancels := rnd.IntN(2) == 0
					senderCancels := rnd.IntN(3) == 0
					cancelAfter := time.Duration(rnd.IntN(500)) * time.Microsecond
					var inner sync.WaitGroup
					inner.Add(3)
					go func() { // sender
						defer inner.Done()
						out, err := transport.Push(ctx, rg.conn, rg.src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 512})
						if err != nil {
							return
						}
						for l := range rg.spec.Layers {
							if l == abortAt {
								out.Abort(nil)
							}
							if out.SendLayer(ctx, l) != nil {
								return
							}
						}
						_, _ = out.Commit(ctx)
					}()
					go func() { // owner: claims, or gives up and cancels
						defer inner.Done()
						wait, stop := context.WithTimeout(ctx, claimWait)
						defer stop()
						if blocks, err := rg.recv.Ready(wait, id); err == nil {
							rg.alloc.Claim(blocks)
							return
						}
						if ownerCancels {
							rg.recv.Cancel(id, "owner gave up")
						}
					}()
					go func() { // a sender-side cancel at a random moment
						defer inner.Done()
						if senderCancels {
							time.Sleep(cancelAfter)
							_ = rg.conn.Cancel(ctx, g, "prefill failed")
						}
					}()
					inner.Wait()
				}()
			}
			wg.Wait()
			stopClock()
			rg.recv.Close() // frees whatever is still reserved or ready
			st := rg.alloc.Stats()
			if len(st.Errors) > 0 {
				t.Fatalf("double frees: %v", st.Errors)
			}
			if st.InUse != 0 || st.Frees != st.Allocs {
				t.Fatalf("blocks leaked: %+v", st)
			}
		})
	}
}

// The same for in-place transfers that commit by sealing their lease, with
// the stream breaking, the sender's process going away before its Open,
// owner cancels and expiry racing the seal: blocks come back exactly once,
// a transfer whose seal failed never reaches its owner, and one whose seal
// succeeded is never freed as a failure (only its owner's cancel or the
// expiry of its unclaimed readiness can free it).
func TestLease_SealExactlyOnceUnderRandomInterleavings(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			fence := newRecordingFence()
			r, alloc, clock := newFencedReceiver(t, fence)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			stopClock := tickClock(clock, 100*time.Microsecond, ttl/5)
			const transfers = 24
			var wg sync.WaitGroup
			for i := range transfers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rnd := rand.New(rand.NewPCG(seed, uint64(i)))
					id := fmt.Sprint("s", i)
					g := transporttest.Grant(t, id, 1, "decode-1", clock.Now())
					lease, err := r.Reserve(ctx, g, 1+rnd.IntN(3))
					if err != nil {
						return // pool exhausted: nothing was allocated
					}
					opens := rnd.IntN(4) != 0
					endsAfterSeal := rnd.IntN(3) // 0: Commit frame, 1: stream breaks, 2: sender process gone
					ownerCancels := rnd.IntN(3) == 0
					cancelAfter := time.Duration(rnd.IntN(300)) * time.Microsecond
					var sealed bool
					var inner sync.WaitGroup
					inner.Add(2)
					go func() { // sender
						defer inner.Done()
						var in *transport.Inbound
						seq := uint64(2)
						if opens {
							if in, err = r.OpenInPlace(g, lease.Blocks, 1); err != nil {
								return
							}
							for layer := range transporttest.Spec().Layers {
								if in.LayerEnd(seq, layer) != nil {
									return
								}
								seq++
							}
						}
						sealed = fence.seal(lease.Blocks[0], lease.FenceKey)
						switch {
						case in != nil && endsAfterSeal == 0:
							_, _ = in.Commit(seq)
						case in != nil && endsAfterSeal == 1:
							in.Abort(transport.ErrPeerLost)
						default:
							r.Abandon(id, g.Epoch, transport.ErrPeerLost)
						}
					}()
					var claimed bool
					var readyErr error
					go func() { // owner
						defer inner.Done()
						if ownerCancels {
							time.Sleep(cancelAfter)
							r.Cancel(id, "owner gave up")
							return
						}
						wait, stop := context.WithTimeout(ctx, 5*time.Second)
						defer stop()
						var blocks []int32
						if blocks, readyErr = r.Ready(wait, id); readyErr == nil {
							claimed = true
							alloc.Claim(blocks)
						}
					}()
					inner.Wait()
					switch {
					case claimed && !sealed:
						t.Errorf("%s: owner claimed a transfer whose seal failed", id)
					case !ownerCancels && sealed && !claimed && !errors.Is(readyErr, transport.ErrLeaseExpired):
						t.Errorf("%s: sealed transfer not handed over: %v", id, readyErr)
					}
				}()
			}
			wg.Wait()
			stopClock()
			r.Close() // frees whatever is still reserved or ready
			st := alloc.Stats()
			if len(st.Errors) > 0 {
				t.Fatalf("double frees: %v", st.Errors)
			}
			if st.InUse != 0 || st.Frees != st.Allocs {
				t.Fatalf("blocks leaked: %+v", st)
			}
		})
	}
}

// tickClock advances clock by step every interval, so that lease expiry
// races everything a test does, until the returned stop is called; stop
// returns once the ticking has ended.
func tickClock(clock *transporttest.FakeClock, interval, step time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(interval):
				clock.Advance(step)
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}
