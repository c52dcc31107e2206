// Package kvcache manages the blocks of a paged KV cache: which blocks are
// free, who holds each one, which full blocks are reusable as a cached prompt
// prefix, and the block table of every sequence.
//
// The bytes live elsewhere, in a kernels.KVCache owned by the compute backend;
// this package only does the bookkeeping, so the CPU and CUDA backends and the
// KV transport share it. A block is in exactly one of three states:
//
//   - held: its reference count is positive (a sequence's table, a transfer
//     in flight, or an exporter pinning it);
//   - cached: unreferenced but registered in the prefix cache under the hash
//     chain of its tokens (see engine/blockhash); it stays reusable until
//     memory is needed, then it is evicted least-recently-released first;
//   - free: unreferenced and holding nothing worth keeping.
//
// Only full blocks are registered, and a full block is never written again,
// so shared blocks need no copy-on-write: a sequence that reuses a cached
// prefix always computes at least its last prompt token itself, in a block of
// its own.
//
// Concurrency: a Manager is safe for concurrent use (the engine's step loop
// and the transport both allocate and free). A Table belongs to one owner and
// is not safe for concurrent use.
package kvcache

import (
	"errors"
	"fmt"
	"sync"

	"github.com/tandemserve/tandem/engine/blockhash"
)

// DefaultBlockSize is the number of token slots per block.
const DefaultBlockSize = 16

var (
	// ErrOutOfBlocks reports that an allocation needs more blocks than are
	// free or evictable; nothing was allocated.
	ErrOutOfBlocks = errors.New("kvcache: out of KV blocks")
	// ErrInvalidConfig reports a Config that cannot describe a cache.
	ErrInvalidConfig = errors.New("kvcache: invalid config")
	// ErrBadBlock reports a block id out of range or a release of a block
	// that is not held; nothing was changed.
	ErrBadBlock = errors.New("kvcache: bad block reference")
)

// Config sizes a Manager.
type Config struct {
	Blocks        int    // total blocks (per layer, as in kernels.KVSpec)
	BlockSize     int    // token slots per block
	ModelID       string // seeds the prefix hash chain
	PrefixCaching bool   // register full blocks for reuse
}

// DefaultConfig returns a config with the default block size and prefix
// caching on; Blocks must still be set (see BlocksForBudget).
func DefaultConfig() Config {
	return Config{BlockSize: DefaultBlockSize, PrefixCaching: true}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Blocks < 1 || c.Blocks > 1<<30 {
		return fmt.Errorf("%w: blocks %d out of range [1, 2^30]", ErrInvalidConfig, c.Blocks)
	}
	if c.BlockSize < 1 || c.BlockSize > 1<<16 {
		return fmt.Errorf("%w: block size %d out of range [1, 65536]", ErrInvalidConfig, c.BlockSize)
	}
	return nil
}

// Stats is a snapshot of the manager's counters.
type Stats struct {
	Blocks    int // total
	Held      int // referenced by a table, transfer or pin
	Free      int // allocatable now: free plus evictable cached blocks
	Cached    int // registered in the prefix cache, held or not
	Evictable int // cached and unreferenced
	Hits      uint64
	Misses    uint64
	Evictions uint64
}

const none = -1

// Manager allocates blocks, counts references and keeps the prefix cache.
type Manager struct {
	cfg  Config
	seed uint64

	mu   sync.Mutex
	refs []int32
	free []int32 // stack of free, uncached blocks

	// Prefix cache. For a cached block b: byHash[hash[b]] == b, parent[b] is
	// the hash of the block before it (or the seed) and toks holds its ids, so
	// a hash match is confirmed against the tokens before reuse.
	byHash map[uint64]int32
	cached []bool
	hash   []uint64
	parent []uint64
	toks   []int32

	// LRU list of cached blocks with no references, oldest at head.
	prev, next []int32
	head, tail int32
	lruLen     int

	hits, misses, evictions uint64
}

// New returns a manager with every block free.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.Blocks
	m := &Manager{
		cfg:    cfg,
		seed:   blockhash.Seed(cfg.ModelID),
		refs:   make([]int32, n),
		free:   make([]int32, n),
		byHash: make(map[uint64]int32),
		cached: make([]bool, n),
		hash:   make([]uint64, n),
		parent: make([]uint64, n),
		prev:   make([]int32, n),
		next:   make([]int32, n),
		head:   none,
		tail:   none,
	}
	if cfg.PrefixCaching {
		m.toks = make([]int32, n*cfg.BlockSize)
	}
	// Hand out low block ids first: the stack pops from the end.
	for i := range n {
		m.free[i] = int32(n - 1 - i)
	}
	return m, nil
}

// Config returns the manager's configuration.
func (m *Manager) Config() Config { return m.cfg }

// BlockSize is the number of token slots per block.
func (m *Manager) BlockSize() int { return m.cfg.BlockSize }

// BlocksFor is the number of blocks that hold n tokens.
func (m *Manager) BlocksFor(n int) int { return (n + m.cfg.BlockSize - 1) / m.cfg.BlockSize }

// Stats returns a snapshot of the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{
		Blocks:    m.cfg.Blocks,
		Held:      m.cfg.Blocks - len(m.free) - m.lruLen,
		Free:      len(m.free) + m.lruLen,
		Cached:    len(m.byHash),
		Evictable: m.lruLen,
		Hits:      m.hits,
		Misses:    m.misses,
		Evictions: m.evictions,
	}
}

// Available is the number of blocks an Allocate could get now.
func (m *Manager) Available() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.free) + m.lruLen
}

// Allocate returns n blocks, each with one reference, taking free blocks
// first and then evicting the least recently released cached blocks. It
// allocates all n or none (ErrOutOfBlocks).
func (m *Manager) Allocate(n int) ([]int32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allocateLocked(n)
}

func (m *Manager) allocateLocked(n int) ([]int32, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: negative count %d", ErrBadBlock, n)
	}
	if n > len(m.free)+m.lruLen {
		return nil, fmt.Errorf("%w: need %d, %d available of %d", ErrOutOfBlocks, n, len(m.free)+m.lruLen, m.cfg.Blocks)
	}
	out := make([]int32, n)
	for i := range out {
		var b int32
		if k := len(m.free); k > 0 {
			b = m.free[k-1]
			m.free = m.free[:k-1]
		} else {
			b = m.head
			m.lruRemove(b)
			m.uncache(b)
			m.evictions++
		}
		m.refs[b] = 1
		out[i] = b
	}
	return out, nil
}

// Retain adds a reference to each block; every block must already be held.
// On error nothing changes.
func (m *Manager) Retain(blocks []int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range blocks {
		if err := m.checkHeld(b); err != nil {
			return err
		}
	}
	for _, b := range blocks {
		m.refs[b]++
	}
	return nil
}

// Free drops one reference from each block. A block whose last reference
// goes becomes evictable if it is cached and free otherwise. Blocks are
// released last to first, so a sequence's tail is evicted before its head
// (the head is the part other prompts are likeliest to share). On error
// (a block not held, or listed more times than it has references) nothing
// changes.
func (m *Manager) Free(blocks []int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.freeLocked(blocks)
}

func (m *Manager) freeLocked(blocks []int32) error {
	// Validate first with provisional decrements, so a block listed more
	// often than it is held is caught, then undo them: on error nothing
	// changes.
	var err error
	done := 0
	for _, b := range blocks {
		if err = m.checkHeld(b); err != nil {
			break
		}
		m.refs[b]--
		done++
	}
	for _, b := range blocks[:done] {
		m.refs[b]++
	}
	if err != nil {
		return err
	}
	for i := len(blocks) - 1; i >= 0; i-- {
		b := blocks[i]
		m.refs[b]--
		if m.refs[b] > 0 {
			continue
		}
		if m.cached[b] {
			m.lruPush(b)
		} else {
			m.free = append(m.free, b)
		}
	}
	return nil
}

func (m *Manager) checkHeld(b int32) error {
	if b < 0 || int(b) >= m.cfg.Blocks {
		return fmt.Errorf("%w: block %d out of range [0, %d)", ErrBadBlock, b, m.cfg.Blocks)
	}
	if m.refs[b] <= 0 {
		return fmt.Errorf("%w: block %d is not held", ErrBadBlock, b)
	}
	return nil
}

// Refs returns block's reference count (0 when free or evictable).
func (m *Manager) Refs(b int32) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b < 0 || int(b) >= m.cfg.Blocks {
		return 0
	}
	return int(m.refs[b])
}

// Contains returns how many leading hashes of a prefix chain are in the cache,
// without touching references or counters (for load reports and placement).
func (m *Manager) Contains(hashes []uint64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, h := range hashes {
		if _, ok := m.byHash[h]; !ok {
			return i
		}
	}
	return len(hashes)
}

// CachedHashes returns up to max hashes of cached blocks, for the prefix-cache
// summary a worker reports to the coordinator: blocks in use first (their
// prefixes are the hottest), then free cached blocks from most to least
// recently released, so the summary keeps what eviction would keep.
func (m *Manager) CachedHashes(max int) []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]uint64, 0, min(max, len(m.byHash)))
	for h, b := range m.byHash {
		if len(out) >= max {
			return out
		}
		if m.refs[b] > 0 {
			out = append(out, h)
		}
	}
	for b := m.tail; b != none && len(out) < max; b = m.prev[b] {
		if m.cached[b] {
			out = append(out, m.hash[b])
		}
	}
	return out
}

// commitLocked registers held block b, holding tokens and following the block
// whose hash is prev, and returns b's hash. A block already cached, or a hash
// another block already serves, is left as is: two sequences that computed the
// same prefix at once keep one copy cached and free the other normally.
func (m *Manager) commitLocked(b int32, prev uint64, tokens []int32) uint64 {
	h := blockhash.Next(prev, tokens)
	if !m.cfg.PrefixCaching || m.cached[b] {
		return h
	}
	if _, ok := m.byHash[h]; ok {
		return h
	}
	m.byHash[h] = b
	m.cached[b] = true
	m.hash[b] = h
	m.parent[b] = prev
	copy(m.toks[int(b)*m.cfg.BlockSize:], tokens)
	return h
}

// lookupLocked returns the cached block for hash h following prev whose tokens
// equal tokens, or none.
func (m *Manager) lookupLocked(h, prev uint64, tokens []int32) int32 {
	b, ok := m.byHash[h]
	if !ok || m.parent[b] != prev {
		return none
	}
	bs := m.cfg.BlockSize
	stored := m.toks[int(b)*bs : int(b+1)*bs]
	for i, t := range tokens {
		if stored[i] != t {
			return none
		}
	}
	return b
}

func (m *Manager) uncache(b int32) {
	if !m.cached[b] {
		return
	}
	delete(m.byHash, m.hash[b])
	m.cached[b] = false
}

func (m *Manager) lruPush(b int32) {
	m.prev[b], m.next[b] = m.tail, none
	if m.tail != none {
		m.next[m.tail] = b
	} else {
		m.head = b
	}
	m.tail = b
	m.lruLen++
}

func (m *Manager) lruRemove(b int32) {
	p, n := m.prev[b], m.next[b]
	if p != none {
		m.next[p] = n
	} else {
		m.head = n
	}
	if n != none {
		m.prev[n] = p
	} else {
		m.tail = p
	}
	m.prev[b], m.next[b] = none, none
	m.lruLen--
}
