package kvcache

import (
	"fmt"

	"github.com/tandemserve/tandem/engine/blockhash"
)

// Table is one sequence's block table: slot s of the sequence lives in block
// Blocks()[s/BlockSize] at offset s%BlockSize. The table holds one reference
// on each of its blocks. It also remembers the hash chain of its leading full
// blocks that are already registered or were matched, so committing new full
// blocks only hashes the new ones.
type Table struct {
	blocks []int32
	hashes []uint64
}

// Blocks returns the block ids. The slice is shared: read it, never modify it
// (it is passed as-is to attention kernels as the block table).
func (t *Table) Blocks() []int32 { return t.blocks }

// Len is the number of blocks.
func (t *Table) Len() int { return len(t.blocks) }

// Hashes returns the hash chain of the leading full blocks known so far.
func (t *Table) Hashes() []uint64 { return t.hashes }

// Slot returns the cache slot (block*blockSize + offset) of token position pos.
// pos must lie within the table's capacity.
func (t *Table) Slot(pos, blockSize int) int32 {
	return t.blocks[pos/blockSize]*int32(blockSize) + int32(pos%blockSize)
}

// Adopt moves already-held blocks (from Allocate, for instance blocks the
// transport filled) to the end of t; t now owns those references.
func (m *Manager) Adopt(t *Table, blocks []int32) {
	t.blocks = append(t.blocks, blocks...)
}

// Reserve grows t so it can hold n tokens, allocating the missing blocks all
// at once or not at all (ErrOutOfBlocks).
func (m *Manager) Reserve(t *Table, n int) error {
	need := m.BlocksFor(n) - len(t.blocks)
	if need <= 0 {
		return nil
	}
	got, err := m.Allocate(need)
	if err != nil {
		return err
	}
	t.blocks = append(t.blocks, got...)
	return nil
}

// Release drops t's references and empties it. Its registered full blocks
// stay in the prefix cache until evicted.
func (m *Manager) Release(t *Table) error {
	if len(t.blocks) == 0 {
		return nil
	}
	if err := m.Free(t.blocks); err != nil {
		return fmt.Errorf("kvcache: release table: %w", err)
	}
	t.blocks, t.hashes = nil, nil
	return nil
}

// MatchPrefix fills the empty table t with the cached blocks of tokens'
// longest cached prefix, taking a reference on each, and returns the number of
// tokens they cover. It never matches the block holding the last token: the
// caller must compute at least one token to get next-token logits, and that
// token's block must be private (cached blocks are immutable). Hits and misses
// count the full blocks that could have matched.
func (m *Manager) MatchPrefix(t *Table, tokens []int32) (int, error) {
	if len(t.blocks) != 0 {
		return 0, fmt.Errorf("%w: match into a table that already holds %d blocks", ErrBadBlock, len(t.blocks))
	}
	if !m.cfg.PrefixCaching || len(tokens) == 0 {
		return 0, nil
	}
	bs := m.cfg.BlockSize
	full := (len(tokens) - 1) / bs
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.seed
	for i := range full {
		blk := tokens[i*bs : (i+1)*bs]
		h := blockhash.Next(prev, blk)
		b := m.lookupLocked(h, prev, blk)
		if b == none {
			break
		}
		if m.refs[b] == 0 {
			m.lruRemove(b)
		}
		m.refs[b]++
		t.blocks = append(t.blocks, b)
		t.hashes = append(t.hashes, h)
		prev = h
	}
	m.hits += uint64(len(t.blocks))
	m.misses += uint64(full - len(t.blocks))
	return len(t.blocks) * bs, nil
}

// CommitFull registers in the prefix cache every block of t that the first
// computed tokens fill completely and that is not registered yet. tokens
// holds the sequence's token ids (at least computed of them).
func (m *Manager) CommitFull(t *Table, tokens []int32, computed int) {
	bs := m.cfg.BlockSize
	full := min(computed, len(tokens)) / bs
	full = min(full, len(t.blocks))
	if len(t.hashes) >= full {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.seed
	if k := len(t.hashes); k > 0 {
		prev = t.hashes[k-1]
	}
	for i := len(t.hashes); i < full; i++ {
		prev = m.commitLocked(t.blocks[i], prev, tokens[i*bs:(i+1)*bs])
		t.hashes = append(t.hashes, prev)
	}
}

// CheckInvariants verifies the manager's internal consistency: every block is
// exactly one of held, evictable-cached or free, and the hash index agrees
// with the per-block records. Tests call it after random operations.
func (m *Manager) CheckInvariants() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.cfg.Blocks
	inFree := make([]int, n)
	for _, b := range m.free {
		inFree[b]++
	}
	inLRU := make([]int, n)
	count := 0
	for b := m.head; b != none; b = m.next[b] {
		inLRU[b]++
		if count++; count > n {
			return fmt.Errorf("kvcache: LRU list has a cycle")
		}
	}
	if count != m.lruLen {
		return fmt.Errorf("kvcache: LRU length %d, list has %d", m.lruLen, count)
	}
	cached := 0
	for b := range n {
		held := m.refs[b] > 0
		switch {
		case m.refs[b] < 0:
			return fmt.Errorf("kvcache: block %d has %d references", b, m.refs[b])
		case held && (inFree[b] > 0 || inLRU[b] > 0):
			return fmt.Errorf("kvcache: held block %d is also free (%d) or evictable (%d)", b, inFree[b], inLRU[b])
		case !held && inFree[b]+inLRU[b] != 1:
			return fmt.Errorf("kvcache: unheld block %d is in free list %d times and LRU %d times", b, inFree[b], inLRU[b])
		case inLRU[b] > 0 && !m.cached[b]:
			return fmt.Errorf("kvcache: evictable block %d is not cached", b)
		case inFree[b] > 0 && m.cached[b]:
			return fmt.Errorf("kvcache: free block %d is still cached", b)
		}
		if m.cached[b] {
			cached++
			if m.byHash[m.hash[b]] != int32(b) {
				return fmt.Errorf("kvcache: cached block %d not indexed by its hash", b)
			}
		}
	}
	if cached != len(m.byHash) {
		return fmt.Errorf("kvcache: %d cached blocks, index has %d", cached, len(m.byHash))
	}
	return nil
}
