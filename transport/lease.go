package transport

import (
	"context"
	"sync"
	"time"
)

// BlockAllocator hands out destination blocks; the decode worker's KV cache
// manager implements it.
//
// Contract: Allocate returns n distinct block ids or an error, and must
// return when ctx ends. Free is called exactly once for every successful
// Allocate whose blocks were not handed to the owner through Receiver.Ready;
// it must not block and may be called from any goroutine.
type BlockAllocator interface {
	Allocate(ctx context.Context, n int) ([]int32, error)
	Free(blocks []int32)
}

// Lease is a reservation of destination blocks for one transfer.
type Lease struct {
	TransferID string
	Token      []byte
	Epoch      uint64
	Expiry     time.Time
	Blocks     []int32
	// FenceKey admits in-place writes to Blocks while the lease lives
	// (see Fence); 0 when the receiver has no fence.
	FenceKey uint64
}

// leaseState: allocating -> reserved -> streaming -> ready -> claimed, with
// freed reachable from every state but claimed. claimed and freed are final.
type leaseState uint8

const (
	stateAllocating leaseState = iota
	stateReserved
	stateStreaming
	stateReady
	stateClaimed
	stateFreed
)

var stateNames = [...]string{"allocating", "reserved", "streaming", "ready", "claimed", "freed"}

func (s leaseState) String() string { return stateNames[s] }

func (s leaseState) final() bool { return s == stateClaimed || s == stateFreed }

// lease is the receiver's record of one transfer. mu serialises every write
// into the lease's blocks with the state change that frees them, which is
// what keeps a late write out of reused blocks.
type lease struct {
	grant Grant
	key   uint64 // fence key; 0 without a fence

	mu       sync.Mutex
	state    leaseState
	blocks   []int32
	owned    map[int32]struct{}
	expiry   time.Time
	bytes    uint64        // payload bytes applied
	cause    error         // why the lease was freed
	settled  chan struct{} // closed on the first of ready or freed
	isSettle bool
}

func newLease(g Grant) *lease {
	return &lease{grant: g, state: stateAllocating, settled: make(chan struct{})}
}

// settleLocked closes settled once; callers hold mu.
func (l *lease) settleLocked() {
	if !l.isSettle {
		l.isSettle = true
		close(l.settled)
	}
}

func (l *lease) public() Lease {
	return Lease{
		TransferID: l.grant.TransferID,
		Token:      l.grant.Token,
		Epoch:      l.grant.Epoch,
		Expiry:     l.expiry,
		Blocks:     append([]int32(nil), l.blocks...),
		FenceKey:   l.key,
	}
}
