package cuda

import (
	"sync"
	"testing"
)

// The pool's bookkeeping needs no device: recycled tensor memory is reused
// only for the same size, concurrent cleanups are safe, and nothing is
// recycled into a closed pool.
func TestPoolRecycleAndReuse(t *testing.T) {
	p := &pool{free: map[int][]uintptr{}, all: map[uintptr]int{}, ctxs: map[uintptr]bool{}}
	if _, ok := p.reuse(64); ok {
		t.Fatal("reuse from an empty pool")
	}
	var wg sync.WaitGroup
	for i := 1; i <= 8; i++ {
		wg.Add(1)
		go func() { // cleanups run on their own goroutine
			defer wg.Done()
			p.recycle(64, uintptr(0x1000*i))
		}()
	}
	wg.Wait()
	p.recycle(128, 0x9000)
	seen := map[uintptr]bool{}
	for i := 0; i < 8; i++ {
		ptr, ok := p.reuse(64)
		if !ok || seen[ptr] || ptr == 0x9000 {
			t.Fatalf("reuse %d: %#x, %v", i, ptr, ok)
		}
		seen[ptr] = true
	}
	if _, ok := p.reuse(64); ok {
		t.Fatal("reused more buffers than were recycled")
	}
	if ptr, ok := p.reuse(128); !ok || ptr != 0x9000 {
		t.Fatalf("reuse(128) = %#x, %v", ptr, ok)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	p.recycle(64, 0x2000) // a cleanup after Close must not resurrect memory
	if _, ok := p.reuse(64); ok {
		t.Fatal("closed pool handed out memory")
	}
}
