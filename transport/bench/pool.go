package bench

import (
	"context"
	"fmt"
	"sync"

	"github.com/tandemserve/tandem/transport"
)

// pool is a free-list BlockAllocator for the benchmark's receiver.
type pool struct {
	mu   sync.Mutex
	free []int32
}

var _ transport.BlockAllocator = (*pool)(nil)

func newPool(n int) *pool {
	p := &pool{}
	for i := n - 1; i >= 0; i-- {
		p.free = append(p.free, int32(i))
	}
	return p
}

func (p *pool) Allocate(_ context.Context, n int) ([]int32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > len(p.free) {
		return nil, fmt.Errorf("bench: %d blocks wanted, %d free", n, len(p.free))
	}
	// Pop one at a time, as the engine's block manager does: fresh blocks
	// come out in ascending order, and so do blocks freed by Free.
	out := make([]int32, n)
	for i := range out {
		out[i] = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	}
	return out, nil
}

func (p *pool) Free(blocks []int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Push back in reverse so the next Allocate returns the same ids in
	// the same order, as a steady-state cache would.
	for i := len(blocks) - 1; i >= 0; i-- {
		p.free = append(p.free, blocks[i])
	}
}
