// Package transporttest holds test doubles for the transport: a fake clock,
// a counting block allocator that catches double frees, memory fixtures and
// throwaway TLS certificates. Other packages' tests may use it too.
package transporttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
)

// FakeClock is a transport.Clock that moves only when Advance is called.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ transport.Clock = (*FakeClock)(nil)

// NewFakeClock starts at a fixed instant.
func NewFakeClock() *FakeClock {
	return &FakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At fires once the clock has been advanced to t.
func (c *FakeClock) At(t time.Time) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: t, ch: ch})
	return ch
}

// Advance moves the clock forward and fires due timers.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// Allocator is a transport.BlockAllocator over a fixed pool that counts
// allocations and frees and records double frees.
type Allocator struct {
	mu      sync.Mutex
	free    []int32
	inUse   map[int32]bool
	allocs  int
	frees   int
	errs    []string
	freedCh chan struct{}
}

var _ transport.BlockAllocator = (*Allocator)(nil)

// NewAllocator makes a pool of blocks 0..n-1.
func NewAllocator(n int) *Allocator {
	a := &Allocator{inUse: make(map[int32]bool), freedCh: make(chan struct{}, 1<<16)}
	for i := n - 1; i >= 0; i-- {
		a.free = append(a.free, int32(i))
	}
	return a
}

// Allocate takes n blocks from the pool.
func (a *Allocator) Allocate(ctx context.Context, n int) ([]int32, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if n > len(a.free) {
		return nil, fmt.Errorf("transporttest: %d blocks wanted, %d free", n, len(a.free))
	}
	out := append([]int32(nil), a.free[len(a.free)-n:]...)
	a.free = a.free[:len(a.free)-n]
	for _, b := range out {
		a.inUse[b] = true
	}
	a.allocs++
	return out, nil
}

// Free returns blocks to the pool, recording any block freed twice.
func (a *Allocator) Free(blocks []int32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, b := range blocks {
		if !a.inUse[b] {
			a.errs = append(a.errs, fmt.Sprintf("block %d freed while not allocated", b))
			continue
		}
		delete(a.inUse, b)
		a.free = append(a.free, b)
	}
	a.frees++
	a.freedCh <- struct{}{}
}

// Claim marks blocks handed to the owner by Ready as returned by the owner.
func (a *Allocator) Claim(blocks []int32) { a.Free(blocks) }

// Stats are an Allocator's counters.
type Stats struct {
	Allocs, Frees, InUse int
	Errors               []string
}

// Stats returns the counters.
func (a *Allocator) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Allocs: a.allocs, Frees: a.frees, InUse: len(a.inUse), Errors: append([]string(nil), a.errs...)}
}

// WaitFree waits for the next Free call, up to d.
func (a *Allocator) WaitFree(d time.Duration) bool {
	select {
	case <-a.freedCh:
		return true
	case <-time.After(d):
		return false
	}
}

// InUse lists allocated blocks in order.
func (a *Allocator) InUse() []int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int32, 0, len(a.inUse))
	for b := range a.inUse {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Spec is a small KV shape for tests: 4 layers of 64 blocks of 1 KiB.
func Spec() kernels.KVSpec {
	return kernels.KVSpec{Layers: 4, Blocks: 64, BlockSize: 4, KVHeads: 2, HeadDim: 32, DType: kernels.KVF16}
}

// Descriptor describes node's memory of spec for model "test-model".
func Descriptor(node string, spec kernels.KVSpec) transport.Descriptor {
	return transport.Descriptor{NodeID: node, ModelID: "test-model", Spec: spec, Layout: transport.LayoutKThenV, HostID: "test-host"}
}

// Secret is a fixed cluster secret for tests.
var Secret = []byte("0123456789abcdef0123456789abcdef")

// Grant issues a grant for transfer id to dest valid for an hour after now.
func Grant(tb testing.TB, id string, epoch uint64, dest string, now time.Time) transport.Grant {
	tb.Helper()
	g, err := transport.IssueGrant(Secret, id, epoch, dest, now.Add(time.Hour))
	if err != nil {
		tb.Fatalf("IssueGrant: %v", err)
	}
	return g
}

// Fill writes a pattern derived from seed into every block of m.
func Fill(m *transport.HostMemory, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for l := range m.Spec().Layers {
		region, _ := m.Region(l)
		for i := range region {
			region[i] = byte(r.Uint32())
		}
	}
}

// SameBlocks reports the first pair whose bytes differ between src and dst
// in any layer, or nil.
func SameBlocks(src, dst transport.Memory, pairs []transport.BlockPair) error {
	bb := src.Spec().BlockBytes()
	a, b := make([]byte, bb), make([]byte, bb)
	for l := range src.Spec().Layers {
		for _, p := range pairs {
			if err := src.ReadBlock(l, int(p.Src), a); err != nil {
				return err
			}
			if err := dst.ReadBlock(l, int(p.Dst), b); err != nil {
				return err
			}
			if string(a) != string(b) {
				return fmt.Errorf("layer %d block %d -> %d differs", l, p.Src, p.Dst)
			}
		}
	}
	return nil
}
