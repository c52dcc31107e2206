package transport_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
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
			stopClock := make(chan struct{})
			var clockWG sync.WaitGroup
			clockWG.Add(1)
			go func() { // expiry races everything else
				defer clockWG.Done()
				for {
					select {
					case <-stopClock:
						return
					case <-time.After(50 * time.Microsecond):
						rg.clock.Advance(ttl / 7)
					}
				}
			}()
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
			close(stopClock)
			clockWG.Wait()
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
