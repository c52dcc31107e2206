package kvcache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestStressNoLeaks runs random sequences, prefix reuse, transport-style raw
// allocations and pins from several goroutines at once, checking after every
// round that the manager is consistent and, at the end, that every block came
// back. A shadow copy of block contents checks that a matched prefix block
// still holds the tokens it was registered with (no block is handed to two
// writers, none is reused while cached and matched); -race catches two
// goroutines writing one block.
func TestStressNoLeaks(t *testing.T) {
	tests := []struct {
		name    string
		blocks  int
		bs      int
		workers int
		ops     int
		caching bool
	}{
		{"tight memory", 24, 4, 4, 1500, true},
		{"roomy", 256, 16, 3, 800, true},
		{"block size one", 40, 1, 3, 800, true},
		{"no prefix caching", 32, 4, 3, 800, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Config{Blocks: tc.blocks, BlockSize: tc.bs, ModelID: "stress", PrefixCaching: tc.caching})
			if err != nil {
				t.Fatal(err)
			}
			shadow := make([]int32, tc.blocks*tc.bs)
			var wg sync.WaitGroup
			errs := make(chan error, tc.workers)
			for w := range tc.workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- stressWorker(m, shadow, rand.New(rand.NewPCG(uint64(w), 7)), tc.ops)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := m.CheckInvariants(); err != nil {
				t.Fatal(err)
			}
			s := m.Stats()
			if s.Held != 0 || s.Free != tc.blocks {
				t.Fatalf("leaked blocks: %+v", s)
			}
			if tc.caching && s.Hits == 0 {
				t.Errorf("no prefix hits in %d ops: the test is not exercising reuse", tc.ops)
			}
			t.Logf("stats: %+v", s)
		})
	}
}

type stressSeq struct {
	tab      Table
	tokens   []int32
	computed int
}

func stressWorker(m *Manager, shadow []int32, r *rand.Rand, ops int) error {
	bs := m.BlockSize()
	var seqs []*stressSeq
	var raw [][]int32 // transport-style allocations and pins
	write := func(s *stressSeq, from, to int) {
		for p := from; p < to; p++ {
			shadow[s.tab.Slot(p, bs)] = s.tokens[p]
		}
	}
	for op := range ops {
		switch k := r.IntN(10); {
		case k < 3 && len(seqs) < 6: // new sequence from one of a few prefixes
			prefix := int32(r.IntN(3)) * 1000
			n := 1 + r.IntN(5*bs)
			s := &stressSeq{tokens: make([]int32, n)}
			for i := range s.tokens {
				s.tokens[i] = prefix + int32(i)
			}
			hit, err := m.MatchPrefix(&s.tab, s.tokens)
			if err != nil {
				return err
			}
			for p := range hit {
				if got := shadow[s.tab.Slot(p, bs)]; got != s.tokens[p] {
					return fmt.Errorf("op %d: matched slot for position %d holds token %d, want %d", op, p, got, s.tokens[p])
				}
			}
			if err := m.Reserve(&s.tab, n); err != nil {
				if !errors.Is(err, ErrOutOfBlocks) {
					return err
				}
				if err := m.Release(&s.tab); err != nil {
					return err
				}
				continue
			}
			write(s, hit, n)
			s.computed = n
			m.CommitFull(&s.tab, s.tokens, n)
			seqs = append(seqs, s)
		case k < 6 && len(seqs) > 0: // decode a few tokens
			s := seqs[r.IntN(len(seqs))]
			add := 1 + r.IntN(bs)
			for range add {
				s.tokens = append(s.tokens, int32(r.IntN(50)))
			}
			if err := m.Reserve(&s.tab, len(s.tokens)); err != nil {
				if !errors.Is(err, ErrOutOfBlocks) {
					return err
				}
				s.tokens = s.tokens[:s.computed]
				continue
			}
			write(s, s.computed, len(s.tokens))
			s.computed = len(s.tokens)
			m.CommitFull(&s.tab, s.tokens, s.computed)
		case k < 8 && len(seqs) > 0: // finish, cancel or preempt: all release
			i := r.IntN(len(seqs))
			if err := m.Release(&seqs[i].tab); err != nil {
				return err
			}
			seqs = append(seqs[:i], seqs[i+1:]...)
		case k < 9: // raw allocation or pin of a sequence's blocks
			if len(seqs) > 0 && r.IntN(2) == 0 {
				b := seqs[r.IntN(len(seqs))].tab.Blocks()
				if err := m.Retain(b); err != nil {
					return err
				}
				raw = append(raw, append([]int32(nil), b...))
			} else if b, err := m.Allocate(1 + r.IntN(3)); err == nil {
				raw = append(raw, b)
			} else if !errors.Is(err, ErrOutOfBlocks) {
				return err
			}
		default:
			if len(raw) > 0 {
				i := r.IntN(len(raw))
				if err := m.Free(raw[i]); err != nil {
					return err
				}
				raw = append(raw[:i], raw[i+1:]...)
			}
		}
		if op%50 == 0 {
			if err := m.CheckInvariants(); err != nil {
				return fmt.Errorf("op %d: %w", op, err)
			}
		}
	}
	for _, s := range seqs {
		if err := m.Release(&s.tab); err != nil {
			return err
		}
	}
	for _, b := range raw {
		if err := m.Free(b); err != nil {
			return err
		}
	}
	return nil
}
