package transport

import "time"

// Fence guards destination blocks that a sender writes in place instead of
// handing the bytes to the receiver: shared memory mapped by both processes
// today, an RDMA backend's memory windows tomorrow. The receiver arms a
// lease's blocks with the lease's key when it reserves them, and disarms
// them at commit and whenever the lease ends. A writer must hold a block's
// current key to write it, so once Disarm has returned a block, no write of
// that transfer (or of any stale one) can land in it, and the block may be
// reused.
//
// Disarm waits out a write in flight. A writer that stalls inside one block
// (stopped, or killed at that instant) keeps the block: Disarm returns it as
// stuck, and the receiver retries it on its reaper's passes and frees it only
// once the fence lets go (the write finished or the writer's process is gone).
//
// An in-place sender commits one-sided, as an RDMA write completes at its
// initiator: after its last write it seals the lease, turning the lease's seal
// word (one per lease, at its first block) from armed to sealed, and the
// transfer is committed from that instant; the Commit frame that follows on
// the stream only tells the receiver sooner. The receiver settles the same
// word with Decide before it ends a lease that has not committed, so exactly
// one of the two wins: a sender whose seal fails learns its lease ended, and
// a lease whose stream broke or whose expiry came after the seal becomes
// ready instead of being freed.
type Fence interface {
	// Arm opens blocks to writers presenting key, and arms the lease's
	// seal word (at blocks[0]). The blocks are unarmed.
	Arm(blocks []int32, key uint64)
	// Disarm closes blocks armed with key; blocks armed with another key
	// or not at all are left alone. It returns the blocks a writer still
	// holds after a short grace period.
	Disarm(blocks []int32, key uint64) (stuck []int32)
	// Decide closes the seal word at lead for key, so that no seal can
	// follow, and reports whether the sender had sealed it first.
	Decide(lead int32, key uint64) (sealed bool)
}

// MaxFenceKey bounds lease keys so a fence may pack one into 32 bits of a
// word it shares with writers; keys run 1..MaxFenceKey and wrap, and a key
// is reused only after four billion newer leases.
const MaxFenceKey = 1<<32 - 1

// quarantineRetry is how often blocks a stalled writer still holds are
// offered to the fence again.
const quarantineRetry = 100 * time.Millisecond

// quarantined blocks wait for their writer before returning to the pool.
type quarantined struct {
	blocks []int32
	key    uint64
}

// nextKeyLocked hands out the next lease key; r.mu is held.
func (r *Receiver) nextKeyLocked() uint64 {
	r.key = r.key%MaxFenceKey + 1
	return r.key
}

// release returns a freed lease's blocks to the allocator, disarming them
// first when a fence guards them; blocks a writer still holds wait in
// quarantine.
func (r *Receiver) release(blocks []int32, key uint64) {
	if r.cfg.Fence == nil || key == 0 {
		r.alloc.Free(blocks)
		return
	}
	stuck := r.disarmAndFree(blocks, key)
	if len(stuck) == 0 {
		return
	}
	r.cfg.Logger.Warn("KV blocks held by a stalled in-place writer; quarantined until it lets go",
		"blocks", len(stuck), "key", key)
	r.mu.Lock()
	r.quarantine = append(r.quarantine, quarantined{blocks: stuck, key: key})
	r.mu.Unlock()
	r.wake(r.cfg.Clock.Now().Add(quarantineRetry))
}

// disarmAndFree disarms blocks and frees those no writer holds.
func (r *Receiver) disarmAndFree(blocks []int32, key uint64) (stuck []int32) {
	stuck = r.cfg.Fence.Disarm(blocks, key)
	held := make(map[int32]bool, len(stuck))
	for _, b := range stuck {
		held[b] = true
	}
	free := make([]int32, 0, len(blocks)-len(stuck))
	for _, b := range blocks {
		if !held[b] {
			free = append(free, b)
		}
	}
	if len(free) > 0 {
		r.alloc.Free(free)
	}
	return stuck
}

// retryQuarantine offers quarantined blocks to the fence again and frees
// the ones it lets go. It reports whether any remain.
func (r *Receiver) retryQuarantine() bool {
	// Entries stay listed while they are retried, so Quarantined never
	// under-reports; entries added meanwhile are kept after the retried ones.
	r.mu.Lock()
	q := r.quarantine
	r.mu.Unlock()
	var still []quarantined
	for _, e := range q {
		if stuck := r.disarmAndFree(e.blocks, e.key); len(stuck) > 0 {
			still = append(still, quarantined{blocks: stuck, key: e.key})
		}
	}
	r.mu.Lock()
	r.quarantine = append(still, r.quarantine[len(q):]...)
	left := len(r.quarantine) > 0
	r.mu.Unlock()
	return left
}

// Quarantined is the number of blocks held back from the pool because a
// stalled in-place writer still holds them.
func (r *Receiver) Quarantined() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.quarantine {
		n += len(e.blocks)
	}
	return n
}
