package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tandemserve/tandem/engine/kvcache"
)

// TestStressRandomOps drives the scheduler like the engine does, with random
// arrivals, priorities, prompt lengths (sharing prefixes), cancellations,
// finishes and transport-style allocations under a tight cache, and checks
// every step's limits and block coverage, then that no block leaks.
func TestStressRandomOps(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		blocks int
		bs     int
		steps  int
		seed   uint64
	}{
		{"tight cache", Config{MaxSeqs: 6, MaxTokens: 24, ChunkSize: 8}, 12, 4, 600, 1},
		{"many small blocks", Config{MaxSeqs: 8, MaxTokens: 16, ChunkSize: 5, MaxSeqLen: 40}, 30, 2, 600, 2},
		{"roomy", Config{MaxSeqs: 16, MaxTokens: 64, ChunkSize: 16}, 200, 16, 400, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kv, err := kvcache.New(kvcache.Config{Blocks: tc.blocks, BlockSize: tc.bs, ModelID: "m", PrefixCaching: true})
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(tc.cfg, kv)
			if err != nil {
				t.Fatal(err)
			}
			if err := stress(s, kv, tc.cfg, rand.New(rand.NewPCG(tc.seed, 9)), tc.steps); err != nil {
				t.Fatal(err)
			}
			if err := kv.CheckInvariants(); err != nil {
				t.Fatal(err)
			}
			if st := kv.Stats(); st.Held != 0 {
				t.Fatalf("leaked blocks: %+v", st)
			}
			t.Logf("scheduler %+v, cache %+v", s.Stats(), kv.Stats())
		})
	}
}

func stress(s *Scheduler, kv *kvcache.Manager, cfg Config, r *rand.Rand, steps int) error {
	var live []*Seq
	var held [][]int32
	nextID := uint64(1)
	drop := func(i int) error {
		err := s.Remove(live[i])
		live = append(live[:i], live[i+1:]...)
		return err
	}
	for st := range steps {
		for range r.IntN(3) {
			n := 1 + r.IntN(3*kv.BlockSize()+5)
			q := &Seq{ID: nextID, Priority: r.IntN(3), Tokens: make([]int32, n)}
			nextID++
			base := int32(r.IntN(2)) * 1000
			for i := range q.Tokens {
				q.Tokens[i] = base + int32(i)
			}
			if err := s.Add(q); err == nil {
				live = append(live, q)
			}
		}
		if r.IntN(5) == 0 && len(live) > 0 { // cancel
			if err := drop(r.IntN(len(live))); err != nil {
				return err
			}
		}
		if r.IntN(6) == 0 {
			if b, err := kv.Allocate(1 + r.IntN(2)); err == nil {
				held = append(held, b)
			}
		}
		if r.IntN(4) == 0 && len(held) > 0 {
			if err := kv.Free(held[0]); err != nil {
				return err
			}
			held = held[1:]
		}
		p, err := s.Schedule()
		if err != nil {
			return err
		}
		if p.Tokens > cfg.MaxTokens || len(p.Work) > cfg.MaxSeqs {
			return fmt.Errorf("step %d: %d tokens in %d seqs exceeds limits", st, p.Tokens, len(p.Work))
		}
		for _, w := range p.Work {
			q := w.Seq
			if q.State() != StateRunning || w.Start != q.Computed || w.N < 1 || w.N > cfg.ChunkSize && w.N > 1 {
				return fmt.Errorf("step %d: bad work %+v (state %d, computed %d)", st, w, q.State(), q.Computed)
			}
			if need := kv.BlocksFor(w.Start + w.N); q.Table.Len() < need {
				return fmt.Errorf("step %d: seq %d has %d blocks, needs %d", st, q.ID, q.Table.Len(), need)
			}
		}
		s.Complete(p)
		for _, w := range p.Work {
			if !w.Logits {
				continue
			}
			q := w.Seq
			q.Tokens = append(q.Tokens, int32(r.IntN(100)))
			if len(q.Tokens) > s.Capacity() || r.IntN(8) == 0 {
				for i, x := range live {
					if x == q {
						if err := drop(i); err != nil {
							return err
						}
						break
					}
				}
			}
		}
		if st%25 == 0 {
			if err := kv.CheckInvariants(); err != nil {
				return fmt.Errorf("step %d: %w", st, err)
			}
		}
	}
	for len(live) > 0 {
		if err := drop(0); err != nil {
			return err
		}
	}
	for _, b := range held {
		if err := kv.Free(b); err != nil {
			return err
		}
	}
	if !s.Idle() {
		return fmt.Errorf("scheduler not idle after removing everything: %+v", s.Stats())
	}
	return nil
}
