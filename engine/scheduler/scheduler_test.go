package scheduler

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/engine/kvcache"
)

func newSched(t *testing.T, cfg Config, blocks, bs int) (*Scheduler, *kvcache.Manager) {
	t.Helper()
	kv, err := kvcache.New(kvcache.Config{Blocks: blocks, BlockSize: bs, ModelID: "m", PrefixCaching: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, kv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kv.CheckInvariants(); err != nil {
			t.Error(err)
		}
	})
	return s, kv
}

func tokens(start, n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(start + i)
	}
	return out
}

// step plans and completes one step, appending token 0 to every sequence
// whose logits the plan asked for, and returns (id, start, n) per work item.
func step(t *testing.T, s *Scheduler) ([][3]int, Plan) {
	t.Helper()
	p, err := s.Schedule()
	if err != nil {
		t.Fatal(err)
	}
	s.Complete(p)
	var got [][3]int
	for _, w := range p.Work {
		got = append(got, [3]int{int(w.Seq.ID), w.Start, w.N})
		if w.Logits {
			w.Seq.Tokens = append(w.Seq.Tokens, 0)
		}
	}
	return got, p
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"no seqs", Config{MaxSeqs: 0, MaxTokens: 8, ChunkSize: 8}, false},
		{"budget below seqs", Config{MaxSeqs: 8, MaxTokens: 4, ChunkSize: 8}, false},
		{"no chunk", Config{MaxSeqs: 1, MaxTokens: 8, ChunkSize: 0}, false},
		{"negative context", Config{MaxSeqs: 1, MaxTokens: 8, ChunkSize: 8, MaxSeqLen: -1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestAddRejects(t *testing.T) {
	tests := []struct {
		name    string
		seq     *Seq
		wantErr error
	}{
		{"prompt larger than the whole cache", &Seq{ID: 1, Tokens: tokens(0, 33)}, ErrTooLarge},
		{"exactly the whole cache", &Seq{ID: 1, Tokens: tokens(0, 32)}, nil},
		{"empty", &Seq{ID: 1}, ErrInvalidSeq},
		{"computed without blocks", &Seq{ID: 1, Tokens: tokens(0, 5), Computed: 3}, ErrInvalidSeq},
		{"all computed", &Seq{ID: 1, Tokens: tokens(0, 5), Computed: 5}, ErrInvalidSeq},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSched(t, DefaultConfig(), 8, 4)
			if err := s.Add(tc.seq); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	t.Run("context window", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.MaxSeqLen = 10
		s, _ := newSched(t, cfg, 8, 4)
		if err := s.Add(&Seq{ID: 1, Tokens: tokens(0, 11)}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
		if s.Capacity() != 10 {
			t.Errorf("capacity %d, want 10", s.Capacity())
		}
	})
	t.Run("added twice", func(t *testing.T) {
		s, _ := newSched(t, DefaultConfig(), 8, 4)
		q := &Seq{ID: 1, Tokens: tokens(0, 3)}
		if err := s.Add(q); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(q); !errors.Is(err, ErrInvalidSeq) {
			t.Fatalf("err = %v, want ErrInvalidSeq", err)
		}
		if err := s.Remove(q); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(q); !errors.Is(err, ErrUnknownSeq) {
			t.Fatalf("second remove: err = %v, want ErrUnknownSeq", err)
		}
	})
}

func TestSteps(t *testing.T) {
	type seqSpec struct {
		prio int
		n    int
	}
	tests := []struct {
		name   string
		cfg    Config
		blocks int
		seqs   []seqSpec
		// want lists, per step, the (id, start, n) work items in plan order.
		want [][][3]int
	}{
		{
			name: "chunked prefill then decode",
			cfg:  Config{MaxSeqs: 4, MaxTokens: 64, ChunkSize: 4},
			seqs: []seqSpec{{0, 10}},
			want: [][][3]int{{{1, 0, 4}}, {{1, 4, 4}}, {{1, 8, 2}}, {{1, 10, 1}}},
		},
		{
			name: "decodes keep pace while a long prompt is chunked",
			cfg:  Config{MaxSeqs: 4, MaxTokens: 64, ChunkSize: 4},
			seqs: []seqSpec{{0, 2}, {0, 12}},
			want: [][][3]int{
				{{1, 0, 2}, {2, 0, 4}},
				{{1, 2, 1}, {2, 4, 4}},
				{{1, 3, 1}, {2, 8, 4}},
				{{1, 4, 1}, {2, 12, 1}},
			},
		},
		{
			name: "token budget splits prompts",
			cfg:  Config{MaxSeqs: 4, MaxTokens: 5, ChunkSize: 8},
			seqs: []seqSpec{{0, 6}, {0, 6}},
			want: [][][3]int{
				{{1, 0, 5}},
				{{1, 5, 1}, {2, 0, 4}},
				{{1, 6, 1}, {2, 4, 2}},
			},
		},
		{
			name: "sequence limit",
			cfg:  Config{MaxSeqs: 2, MaxTokens: 64, ChunkSize: 8},
			seqs: []seqSpec{{0, 1}, {0, 1}, {0, 1}},
			want: [][][3]int{{{1, 0, 1}, {2, 0, 1}}, {{1, 1, 1}, {2, 1, 1}}},
		},
		{
			name: "priority first, FCFS within a class",
			cfg:  Config{MaxSeqs: 2, MaxTokens: 64, ChunkSize: 8},
			seqs: []seqSpec{{0, 1}, {5, 1}, {0, 1}, {5, 1}},
			want: [][][3]int{{{2, 0, 1}, {4, 0, 1}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSched(t, tc.cfg, 64, 4)
			var all []*Seq
			for i, sp := range tc.seqs {
				q := &Seq{ID: uint64(i + 1), Priority: sp.prio, Tokens: tokens(100*i, sp.n)}
				if err := s.Add(q); err != nil {
					t.Fatal(err)
				}
				all = append(all, q)
			}
			for i, want := range tc.want {
				got, _ := step(t, s)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("step %d (-want +got):\n%s", i, diff)
				}
			}
			for _, q := range all {
				if err := s.Remove(q); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestPreemptLowestPriorityNewest(t *testing.T) {
	// 4 blocks of 2 tokens. Three sequences of 2 tokens each take one block
	// for the prompt; each decode needs a second block by position 2.
	cfg := Config{MaxSeqs: 4, MaxTokens: 16, ChunkSize: 16}
	s, kv := newSched(t, cfg, 4, 2)
	a := &Seq{ID: 1, Priority: 1, Tokens: tokens(0, 2)}
	b := &Seq{ID: 2, Priority: 0, Tokens: tokens(10, 2)}
	c := &Seq{ID: 3, Priority: 0, Tokens: tokens(20, 2)}
	for _, q := range []*Seq{a, b, c} {
		if err := s.Add(q); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := step(t, s); len(got) != 3 {
		t.Fatalf("step 0 planned %v, want all three prompts", got)
	}
	// Now each has 3 tokens (2 computed); decoding needs a second block each
	// and one is free. a (highest priority) takes it; b then needs one, so
	// c (the newest of the lowest class) is preempted and b gets its block.
	got, p := step(t, s)
	if diff := cmp.Diff([][3]int{{1, 2, 1}, {2, 2, 1}}, got); diff != "" {
		t.Fatalf("step 1 (-want +got):\n%s", diff)
	}
	if len(p.Preempted) != 1 || p.Preempted[0] != c {
		t.Fatalf("preempted %v, want only c", p.Preempted)
	}
	if st := s.Stats(); st.Preemptions != 1 || st.Running != 2 || st.Waiting != 1 {
		t.Errorf("stats %+v, want 1 preemption, 2 running, 1 waiting", st)
	}
	if c.Computed != 0 || c.Table.Len() != 0 || c.State() != StateWaiting || c.Preemptions != 1 {
		t.Errorf("preempted c: computed %d, blocks %d, state %d, preemptions %d", c.Computed, c.Table.Len(), c.State(), c.Preemptions)
	}
	if len(c.Tokens) != 3 {
		t.Errorf("c kept %d tokens, want its prompt and generated token (3)", len(c.Tokens))
	}
	// Finishing a returns two blocks: c is recomputed from scratch,
	// prompt and generated token together, and asks for logits.
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	got, p = step(t, s)
	if diff := cmp.Diff([][3]int{{2, 3, 1}, {3, 0, 3}}, got); diff != "" {
		t.Fatalf("after a finished (-want +got):\n%s", diff)
	}
	if !p.Work[1].Logits {
		t.Error("recomputed c must produce logits")
	}
	for _, q := range []*Seq{b, c} {
		if err := s.Remove(q); err != nil {
			t.Fatal(err)
		}
	}
	if st := kv.Stats(); st.Held != 0 {
		t.Errorf("blocks still held: %+v", st)
	}
}

func TestSelfPreemptionWhenAloneAndShort(t *testing.T) {
	// A transfer holds 3 of 4 blocks: the only sequence cannot grow and
	// preempts itself rather than overcommit; it waits until blocks return.
	s, kv := newSched(t, Config{MaxSeqs: 2, MaxTokens: 8, ChunkSize: 8}, 4, 2)
	q := &Seq{ID: 1, Tokens: tokens(0, 2)}
	if err := s.Add(q); err != nil {
		t.Fatal(err)
	}
	step(t, s)
	held, err := kv.Allocate(3)
	if err != nil {
		t.Fatal(err)
	}
	got, p := step(t, s)
	if len(got) != 0 || len(p.Preempted) != 1 {
		t.Fatalf("planned %v, preempted %d; want nothing planned and q preempted", got, len(p.Preempted))
	}
	if got, _ := step(t, s); len(got) != 0 {
		t.Fatalf("planned %v with no free memory", got)
	}
	if err := kv.Free(held); err != nil {
		t.Fatal(err)
	}
	got, _ = step(t, s)
	if diff := cmp.Diff([][3]int{{1, 2, 1}}, got); diff != "" {
		t.Fatalf("after memory returned (-want +got):\n%s", diff)
	}
	if q.PrefixHit != 2 {
		t.Errorf("re-admitted sequence reused %d tokens, want its cached full block (2)", q.PrefixHit)
	}
	if err := s.Remove(q); err != nil {
		t.Fatal(err)
	}
}

func TestImportedSequence(t *testing.T) {
	s, kv := newSched(t, DefaultConfig(), 8, 4)
	blocks, err := kv.Allocate(2)
	if err != nil {
		t.Fatal(err)
	}
	q := &Seq{ID: 7, Tokens: tokens(0, 7), Computed: 6}
	kv.Adopt(&q.Table, blocks)
	if err := s.Add(q); err != nil {
		t.Fatal(err)
	}
	got, _ := step(t, s)
	if diff := cmp.Diff([][3]int{{7, 6, 1}}, got); diff != "" {
		t.Fatalf("imported sequence must decode at once (-want +got):\n%s", diff)
	}
	if err := s.Remove(q); err != nil {
		t.Fatal(err)
	}
	if kv.Stats().Held != 0 {
		t.Errorf("imported blocks not released: %+v", kv.Stats())
	}
}

func TestHigherPriorityArrivalPreempts(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		blocks int
		// low-priority sequences running first, then one arrival
		low         int
		arrivalPrio int
		wantAdmit   bool
	}{
		{"sequence slot taken by lower priority", Config{MaxSeqs: 2, MaxTokens: 16, ChunkSize: 16}, 32, 2, 1, true},
		{"memory taken by lower priority", Config{MaxSeqs: 8, MaxTokens: 16, ChunkSize: 16}, 4, 2, 1, true},
		{"equal priority waits for a slot", Config{MaxSeqs: 2, MaxTokens: 16, ChunkSize: 16}, 32, 2, 0, false},
		{"equal priority waits for memory", Config{MaxSeqs: 8, MaxTokens: 16, ChunkSize: 16}, 4, 2, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, kv := newSched(t, tc.cfg, tc.blocks, 2)
			var all []*Seq
			for i := range tc.low {
				q := &Seq{ID: uint64(i + 1), Tokens: tokens(10*i, 3)} // 2 blocks each, room to decode one
				if err := s.Add(q); err != nil {
					t.Fatal(err)
				}
				all = append(all, q)
			}
			step(t, s)
			hi := &Seq{ID: 9, Priority: tc.arrivalPrio, Tokens: tokens(500, 3)}
			if err := s.Add(hi); err != nil {
				t.Fatal(err)
			}
			_, p := step(t, s)
			if got := hi.State() == StateRunning; got != tc.wantAdmit {
				t.Fatalf("arrival running = %v, want %v (plan %+v)", got, tc.wantAdmit, p.Work)
			}
			if tc.wantAdmit {
				victim := all[len(all)-1]
				if len(p.Preempted) != 1 || p.Preempted[0] != victim {
					t.Errorf("preempted %v, want the newest low-priority sequence", p.Preempted)
				}
				for _, w := range p.Work {
					if w.Seq == victim {
						t.Errorf("preempted sequence still planned: %+v", w)
					}
				}
			} else if len(p.Preempted) != 0 {
				t.Errorf("equal priority preempted %d sequences", len(p.Preempted))
			}
			for _, q := range append(all, hi) {
				if err := s.Remove(q); err != nil {
					t.Fatal(err)
				}
			}
			if st := kv.Stats(); st.Held != 0 {
				t.Errorf("blocks held: %+v", st)
			}
		})
	}
}
