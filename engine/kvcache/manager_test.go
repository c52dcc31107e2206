package kvcache

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/engine/blockhash"
)

func newManager(t *testing.T, blocks, bs int) *Manager {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Blocks, cfg.BlockSize, cfg.ModelID = blocks, bs, "test-model"
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.CheckInvariants(); err != nil {
			t.Error(err)
		}
	})
	return m
}

func seq(start, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(start + i)
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		blocks  int
		bs      int
		wantErr bool
	}{
		{"ok", 8, 16, false},
		{"zero blocks", 0, 16, true},
		{"negative block size", 8, -1, true},
		{"zero block size", 8, 0, true},
		{"huge block size", 8, 1 << 20, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Blocks, cfg.BlockSize = tc.blocks, tc.bs
			_, err := New(cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestAllocateFree(t *testing.T) {
	tests := []struct {
		name    string
		ops     func(m *Manager) error
		wantErr error
		want    Stats
	}{
		{
			name: "allocate all then free",
			ops: func(m *Manager) error {
				b, err := m.Allocate(4)
				if err != nil {
					return err
				}
				return m.Free(b)
			},
			want: Stats{Blocks: 4, Free: 4},
		},
		{
			name: "too many is all or nothing",
			ops: func(m *Manager) error {
				if _, err := m.Allocate(3); err != nil {
					return err
				}
				_, err := m.Allocate(2)
				return err
			},
			wantErr: ErrOutOfBlocks,
			want:    Stats{Blocks: 4, Held: 3, Free: 1},
		},
		{
			name:    "negative count",
			ops:     func(m *Manager) error { _, err := m.Allocate(-1); return err },
			wantErr: ErrBadBlock,
			want:    Stats{Blocks: 4, Free: 4},
		},
		{
			name:    "free unheld block",
			ops:     func(m *Manager) error { return m.Free([]int32{2}) },
			wantErr: ErrBadBlock,
			want:    Stats{Blocks: 4, Free: 4},
		},
		{
			name:    "free out of range",
			ops:     func(m *Manager) error { return m.Free([]int32{9}) },
			wantErr: ErrBadBlock,
			want:    Stats{Blocks: 4, Free: 4},
		},
		{
			name: "double free in one call changes nothing",
			ops: func(m *Manager) error {
				b, _ := m.Allocate(2)
				return m.Free([]int32{b[0], b[1], b[0]})
			},
			wantErr: ErrBadBlock,
			want:    Stats{Blocks: 4, Held: 2, Free: 2},
		},
		{
			name: "retain keeps block held after one free",
			ops: func(m *Manager) error {
				b, _ := m.Allocate(1)
				if err := m.Retain(b); err != nil {
					return err
				}
				return m.Free(b)
			},
			want: Stats{Blocks: 4, Held: 1, Free: 3},
		},
		{
			name:    "retain unheld",
			ops:     func(m *Manager) error { return m.Retain([]int32{0}) },
			wantErr: ErrBadBlock,
			want:    Stats{Blocks: 4, Free: 4},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, 4, 4)
			err := tc.ops(m)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, m.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

// fill computes a sequence of tokens into a fresh table the way the
// scheduler does: match, reserve, commit.
func fill(t *testing.T, m *Manager, tokens []int32) (*Table, int) {
	t.Helper()
	tab := &Table{}
	hit, err := m.MatchPrefix(tab, tokens)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reserve(tab, len(tokens)); err != nil {
		t.Fatal(err)
	}
	m.CommitFull(tab, tokens, len(tokens))
	return tab, hit
}

func TestPrefixReuse(t *testing.T) {
	const bs = 4
	tests := []struct {
		name      string
		first     []int32
		second    []int32
		wantHit   int
		wantStats Stats // after the second sequence is filled, both held
	}{
		{
			name: "identical prompt reuses all but the last token's block",
			// 9 tokens: blocks 0,1 full, block 2 holds token 8.
			first: seq(0, 9), second: seq(0, 9), wantHit: 8,
			wantStats: Stats{Blocks: 16, Held: 4, Free: 12, Cached: 2, Hits: 2},
		},
		{
			name:  "prompt of exact blocks recomputes its last block",
			first: seq(0, 8), second: seq(0, 8), wantHit: 4,
			// The first table's two full blocks were cached; the second
			// reuses one and computes block 1 again, whose hash is taken.
			wantStats: Stats{Blocks: 16, Held: 3, Free: 13, Cached: 2, Hits: 1},
		},
		{
			name:      "divergence in second block",
			first:     seq(0, 12),
			second:    append(seq(0, 4), seq(100, 8)...),
			wantHit:   4,
			wantStats: Stats{Blocks: 16, Held: 5, Free: 11, Cached: 5, Hits: 1, Misses: 1},
		},
		{
			name:      "nothing shared",
			first:     seq(0, 8),
			second:    seq(50, 8),
			wantHit:   0,
			wantStats: Stats{Blocks: 16, Held: 4, Free: 12, Cached: 4, Misses: 1},
		},
		{
			name:      "shorter than a block",
			first:     seq(0, 3),
			second:    seq(0, 3),
			wantHit:   0,
			wantStats: Stats{Blocks: 16, Held: 2, Free: 14},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, 16, bs)
			a, hitA := fill(t, m, tc.first)
			if hitA != 0 {
				t.Fatalf("first sequence hit %d tokens on an empty cache", hitA)
			}
			// Misses of the first fill are not part of the expectation.
			m.mu.Lock()
			m.misses = 0
			m.mu.Unlock()
			b, hit := fill(t, m, tc.second)
			if hit != tc.wantHit {
				t.Errorf("hit = %d tokens, want %d", hit, tc.wantHit)
			}
			for i := range hit / bs {
				if a.Blocks()[i] != b.Blocks()[i] {
					t.Errorf("block %d not shared: %d vs %d", i, a.Blocks()[i], b.Blocks()[i])
				}
			}
			if diff := cmp.Diff(tc.wantStats, m.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
			for _, tab := range []*Table{a, b} {
				if err := m.Release(tab); err != nil {
					t.Fatal(err)
				}
			}
			if s := m.Stats(); s.Held != 0 || s.Free != 16 {
				t.Errorf("after release: %+v, want nothing held", s)
			}
		})
	}
}

func TestEvictionLRU(t *testing.T) {
	const bs = 2
	m := newManager(t, 6, bs)
	// Three 2-block sequences, each 5 tokens so both full blocks are
	// matchable: 3 blocks each; 6 blocks in total cannot hold them all.
	a, _ := fill(t, m, seq(0, 5))
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	b, _ := fill(t, m, seq(100, 5))
	if err := m.Release(b); err != nil {
		t.Fatal(err)
	}
	// Free: 2 uncached (the tails), 4 evictable: a's two full blocks are the
	// oldest. Allocating 4 takes the 2 free then evicts a's tail-first.
	got, err := m.Allocate(4)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Stats()
	if s.Evictions != 2 || s.Cached != 2 {
		t.Fatalf("stats %+v, want 2 evictions and b's 2 blocks still cached", s)
	}
	if err := m.Free(got); err != nil {
		t.Fatal(err)
	}
	tab := &Table{}
	if hit, _ := m.MatchPrefix(tab, seq(100, 5)); hit != 4 {
		t.Errorf("b's prefix hit %d tokens, want 4 (most recently released survives)", hit)
	}
	if err := m.Release(tab); err != nil {
		t.Fatal(err)
	}
	tab = &Table{}
	if hit, _ := m.MatchPrefix(tab, seq(0, 5)); hit != 0 {
		t.Errorf("a's prefix hit %d tokens, want 0 (evicted)", hit)
	}
}

func TestEvictTailBeforeHead(t *testing.T) {
	m := newManager(t, 4, 1)
	a, _ := fill(t, m, seq(0, 4)) // blocks for tokens 0..3, first three cached
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	// Allocate 2: the uncached last block, then the cached tail (token 2).
	got, err := m.Allocate(2)
	if err != nil {
		t.Fatal(err)
	}
	tab := &Table{}
	if hit, _ := m.MatchPrefix(tab, seq(0, 4)); hit != 2 {
		t.Errorf("hit %d tokens after evicting the tail, want 2", hit)
	}
	if err := m.Free(got); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(tab); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixCachingOff(t *testing.T) {
	cfg := Config{Blocks: 8, BlockSize: 2, ModelID: "m"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := fill(t, m, seq(0, 5))
	_, hit := fill(t, m, seq(0, 5))
	if hit != 0 || m.Stats().Cached != 0 {
		t.Errorf("hit %d, stats %+v: caching off must not match or register", hit, m.Stats())
	}
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
}

func TestModelIDSeparatesCaches(t *testing.T) {
	m := newManager(t, 8, 2)
	a, _ := fill(t, m, seq(0, 5))
	other := &Table{}
	m.mu.Lock()
	m.seed++ // a different model's chain over the same manager
	m.mu.Unlock()
	if hit, _ := m.MatchPrefix(other, seq(0, 5)); hit != 0 {
		t.Errorf("hit %d under another seed, want 0", hit)
	}
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
}

func TestCollisionIsAMiss(t *testing.T) {
	m := newManager(t, 8, 2)
	a, _ := fill(t, m, seq(0, 5))
	// Corrupt the stored tokens of the first block, as if another prefix
	// had the same hash: the match must be refused.
	m.mu.Lock()
	m.toks[int(a.Blocks()[0])*2] = 999
	m.mu.Unlock()
	tab := &Table{}
	if hit, _ := m.MatchPrefix(tab, seq(0, 5)); hit != 0 {
		t.Errorf("hit %d tokens on mismatching stored tokens, want 0", hit)
	}
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
}

func TestContainsAndSlots(t *testing.T) {
	m := newManager(t, 8, 2)
	toks := seq(0, 7)
	a, _ := fill(t, m, toks)
	if got := m.Contains(a.Hashes()); got != 3 {
		t.Errorf("Contains = %d, want 3", got)
	}
	if got := m.Contains([]uint64{a.Hashes()[0], 12345}); got != 1 {
		t.Errorf("Contains with unknown second = %d, want 1", got)
	}
	for pos := range toks {
		want := a.Blocks()[pos/2]*2 + int32(pos%2)
		if got := a.Slot(pos, 2); got != want {
			t.Errorf("Slot(%d) = %d, want %d", pos, got, want)
		}
	}
	other := &Table{}
	m.Adopt(other, []int32{})
	if _, err := m.MatchPrefix(a, toks); !errors.Is(err, ErrBadBlock) {
		t.Errorf("MatchPrefix into a non-empty table: err = %v, want ErrBadBlock", err)
	}
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(other); err != nil {
		t.Fatal(err)
	}
}

// CachedHashes reports held prefixes before released ones, newest released
// first, and never more than asked.
func TestCachedHashes(t *testing.T) {
	const bs = 4
	m := newManager(t, 16, bs)
	a, _ := fill(t, m, seq(0, 8))   // 2 full blocks, released below
	b, _ := fill(t, m, seq(100, 8)) // 2 full blocks, released after a
	held, _ := fill(t, m, seq(200, 4))
	if err := m.Release(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(b); err != nil {
		t.Fatal(err)
	}
	chainA := blockhash.Chain("test-model", seq(0, 8), bs)
	chainB := blockhash.Chain("test-model", seq(100, 8), bs)
	chainHeld := blockhash.Chain("test-model", seq(200, 4), bs)
	got := m.CachedHashes(100)
	// A table releases its tail blocks first (they are evicted first), so the
	// most recent entry is the newest table's first block.
	want := []uint64{chainHeld[0], chainB[0], chainB[1], chainA[0], chainA[1]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("CachedHashes (-want +got):\n%s", diff)
	}
	if got := m.CachedHashes(2); len(got) != 2 || got[0] != chainHeld[0] {
		t.Fatalf("CachedHashes(2) = %v, want the held block first", got)
	}
	if err := m.Release(held); err != nil {
		t.Fatal(err)
	}
}
