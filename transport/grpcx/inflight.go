package grpcx

import (
	"sync"
	"time"

	"google.golang.org/grpc/mem"
)

// inflight counts payload segments gRPC still holds. The copy-free codec
// hands gRPC slices of the sender's pinned KV memory, and gRPC writes them
// after SendMsg returns; the stream's Close waits until gRPC has released
// them all, so the transfer's Release (which unpins the source blocks) can
// never race a late read of them.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0 while a waiter exists
}

var _ mem.BufferPool = (*inflight)(nil)

// wrap returns seg as a gRPC buffer whose release is counted. Segments too
// small for gRPC's reference counting are copied instead of aliased.
func (f *inflight) wrap(seg []byte) mem.Buffer {
	if mem.IsBelowBufferPoolingThreshold(cap(seg)) {
		return mem.SliceBuffer(append([]byte(nil), seg...))
	}
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
	return mem.NewBuffer(&seg, f)
}

// Get is never used: the buffers were not taken from this pool.
func (f *inflight) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

// Put is gRPC releasing one segment.
func (f *inflight) Put(*[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 && f.zero != nil {
		close(f.zero)
		f.zero = nil
	}
}

// wait returns once gRPC released every segment, or after limit.
func (f *inflight) wait(limit time.Duration) bool {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return true
	}
	if f.zero == nil {
		f.zero = make(chan struct{})
	}
	zero := f.zero
	f.mu.Unlock()
	select {
	case <-zero:
		return true
	case <-time.After(limit):
		return false
	}
}
