package shm

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/transport"
)

// A fence word guards one destination block. Its layout, shared by both
// processes:
//
//	0                              unarmed: nobody may write
//	key<<32                        armed for the lease with key
//	key<<32 | writer<<1 | 1        being written by writer, holding key
//
// A writer moves armed -> writing -> armed with compare-and-swap around each
// block copy; the receiver disarms with compare-and-swap from armed to 0, so
// it can never pull a block out from under a copy in progress, and a writer
// whose lease ended finds a word that no longer holds its key and writes
// nothing.
//
// The fence file holds a second array of as many words: the seal words. A
// lease's seal word is the one at its first block, and it is never written:
//
//	0                              unarmed: no seal can succeed
//	key<<32                        armed: the sender may seal
//	key<<32 | sealedBit            sealed: the sender committed the lease
//
// The sender seals with compare-and-swap from armed after its last write;
// the receiver settles with compare-and-swap to 0 (Decide), so the one of
// them that moves the word first decides whether the lease committed.
const (
	writingBit = 1
	sealedBit  = 2
	maxWriters = 1<<31 - 1
)

// disarmGrace is how long Disarm waits for a copy in flight (a block copy
// takes microseconds) before reporting the block stuck.
const disarmGrace = 50 * time.Millisecond

// maxRegistered bounds the writer processes a fence tracks.
const maxRegistered = 1024

// words views a mapped fence file as its atomic words.
func words(mem []byte) []atomic.Uint64 {
	if len(mem) < 8 {
		return nil
	}
	// The mapping is page-aligned, so every word is 8-byte aligned.
	return unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&mem[0])), len(mem)/8)
}

// Fence is the receiver's block fence over a sealed memfd that every
// in-place sender maps read-write. It implements transport.Fence.
type Fence struct {
	fd    int
	mem   []byte
	words []atomic.Uint64 // per block
	seals []atomic.Uint64 // per block; a lease's is at its first block

	mu      sync.Mutex
	writers map[uint32]*writerProc // by writer id
	byPID   map[int]uint32
	next    uint32
	closed  bool
}

// writerProc is a registered writer process; pidfd (when the kernel has
// pidfd_open) tells its death apart from a pid reused by another process.
type writerProc struct {
	pid   int
	pidfd int
	gone  bool
}

var _ transport.Fence = (*Fence)(nil)

// NewFence creates the fence for a receiver of blocks blocks.
func NewFence(blocks int) (*Fence, error) {
	if blocks <= 0 {
		return nil, fmt.Errorf("%w: shm: fence of %d blocks", transport.ErrInvalid, blocks)
	}
	fd, mem, err := createSealed("tandem-kv-fence", fenceFileBytes(blocks))
	if err != nil {
		return nil, err
	}
	all := words(mem)
	return &Fence{fd: fd, mem: mem, words: all[:blocks], seals: all[blocks:], writers: make(map[uint32]*writerProc), byPID: make(map[int]uint32)}, nil
}

// fenceFileBytes is the size of a fence file for blocks blocks: a fence
// word and a seal word each.
func fenceFileBytes(blocks int) int { return 2 * blocks * 8 }

// Blocks is the number of blocks the fence guards.
func (f *Fence) Blocks() int { return len(f.words) }

// Arm opens blocks to writers holding key, and the lease's seal word to its
// sender.
func (f *Fence) Arm(blocks []int32, key uint64) {
	for _, b := range blocks {
		f.words[b].Store(key << 32)
	}
	if len(blocks) > 0 {
		f.seals[blocks[0]].Store(key << 32)
	}
}

// Decide closes the seal word at lead for key and reports whether the
// sender had sealed it.
func (f *Fence) Decide(lead int32, key uint64) (sealed bool) {
	w := &f.seals[lead]
	for {
		v := w.Load()
		if v>>32 != key {
			return false // never armed with key, or already settled
		}
		if w.CompareAndSwap(v, 0) {
			return v&sealedBit != 0
		}
	}
}

// Disarm closes blocks armed with key, waiting out copies in flight; a copy
// by a writer whose process has exited is abandoned, and the block with it.
func (f *Fence) Disarm(blocks []int32, key uint64) (stuck []int32) {
	var deadline time.Time
	for _, b := range blocks {
		w := &f.words[b]
		for spins := 0; ; spins++ {
			v := w.Load()
			if v>>32 != key {
				break // never armed with key, or already disarmed
			}
			if v&writingBit == 0 || f.writerGone(uint32(v>>1)&maxWriters) {
				if w.CompareAndSwap(v, 0) {
					break
				}
				continue
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(disarmGrace)
			} else if time.Now().After(deadline) {
				stuck = append(stuck, b)
				break
			}
			if spins < 64 {
				runtime.Gosched()
			} else {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	return stuck
}

// register admits the process pid as a writer and returns its id; a
// process mapping the fence again keeps its id.
func (f *Fence) register(pid int) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, transport.ErrClosed
	}
	if id, ok := f.byPID[pid]; ok && !f.writers[id].gone {
		return id, nil
	}
	if len(f.writers) >= maxRegistered {
		f.pruneLocked()
		if len(f.writers) >= maxRegistered {
			return 0, fmt.Errorf("%w: shm: %d writer processes registered", transport.ErrExhausted, len(f.writers))
		}
	}
	f.next = f.next%maxWriters + 1
	p := &writerProc{pid: pid, pidfd: -1}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.pidfd = fd
	}
	f.writers[f.next] = p
	f.byPID[pid] = f.next
	return f.next, nil
}

// writerGone reports whether writer's process has exited. An id nobody
// registered cannot belong to a live writer.
func (f *Fence) writerGone(id uint32) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.writers[id]
	if p == nil {
		return true
	}
	if !p.gone {
		p.gone = exited(p)
	}
	return p.gone
}

func exited(p *writerProc) bool {
	if p.pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1 // a pidfd polls readable once its process exits
	}
	return errors.Is(unix.Kill(p.pid, 0), unix.ESRCH)
}

// pruneLocked forgets writers whose processes have exited.
func (f *Fence) pruneLocked() {
	for id, p := range f.writers {
		if p.gone || exited(p) {
			f.forgetLocked(id, p)
		}
	}
}

func (f *Fence) forgetLocked(id uint32, p *writerProc) {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
	delete(f.writers, id)
	if f.byPID[p.pid] == id {
		delete(f.byPID, p.pid)
	}
}

// Close unmaps the fence; senders keep their own mappings until they close.
func (f *Fence) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	for id, p := range f.writers {
		f.forgetLocked(id, p)
	}
	unix.Munmap(f.mem)
	f.mem, f.words, f.seals = nil, nil, nil
	return unix.Close(f.fd)
}

// acquire takes block b of a remote fence for writer before a copy.
func acquire(w []atomic.Uint64, b int32, key uint64, writer uint32) error {
	if !w[b].CompareAndSwap(key<<32, key<<32|uint64(writer)<<1|writingBit) {
		return fmt.Errorf("%w: shm: block %d is no longer leased to this transfer", transport.ErrStaleEpoch, b)
	}
	return nil
}

// seal commits the lease whose seal word is at lead, one-sided. It fails
// when the receiver settled the word first: the lease ended.
func seal(seals []atomic.Uint64, lead int32, key uint64) error {
	if !seals[lead].CompareAndSwap(key<<32, key<<32|sealedBit) {
		return fmt.Errorf("%w: shm: the lease ended before its commit", transport.ErrStaleEpoch)
	}
	return nil
}

// release hands block b back after the copy. It fails only if the
// receiver gave up on this writer (took it for dead) mid-copy.
func release(w []atomic.Uint64, b int32, key uint64, writer uint32) error {
	if !w[b].CompareAndSwap(key<<32|uint64(writer)<<1|writingBit, key<<32) {
		return fmt.Errorf("%w: shm: block %d was revoked during the write", transport.ErrStaleEpoch, b)
	}
	return nil
}
