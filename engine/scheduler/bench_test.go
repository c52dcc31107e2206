package scheduler

import (
	"testing"

	"github.com/tandemserve/tandem/engine/kvcache"
)

// BenchmarkScheduleDecode measures one step's planning and completion for 32
// sequences decoding (the engine's per-step overhead besides the forward
// pass and sampling).
func BenchmarkScheduleDecode(b *testing.B) {
	kv, err := kvcache.New(kvcache.Config{Blocks: 1 << 16, BlockSize: 16, ModelID: "m", PrefixCaching: true})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(DefaultConfig(), kv)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 32 {
		if err := s.Add(&Seq{ID: uint64(i), Tokens: tokens(i*1000, 200)}); err != nil {
			b.Fatal(err)
		}
	}
	for !allDecoding(s) {
		p, err := s.Schedule()
		if err != nil {
			b.Fatal(err)
		}
		s.Complete(p)
		for _, w := range p.Work {
			if w.Logits {
				w.Seq.Tokens = append(w.Seq.Tokens, 1)
			}
		}
	}
	for b.Loop() {
		p, err := s.Schedule()
		if err != nil {
			b.Fatal(err)
		}
		s.Complete(p)
		for _, w := range p.Work {
			w.Seq.Tokens = append(w.Seq.Tokens, 1)
		}
		if len(p.Work) != 32 {
			b.Fatalf("planned %d sequences, want 32", len(p.Work))
		}
	}
}

func allDecoding(s *Scheduler) bool {
	if len(s.waiting) > 0 {
		return false
	}
	for _, q := range s.running {
		if len(q.Tokens)-q.Computed != 1 {
			return false
		}
	}
	return true
}
