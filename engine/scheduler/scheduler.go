// Package scheduler decides, at every step of the engine, which sequences run
// and how many of their tokens are computed: iteration-level continuous
// batching over a paged KV cache.
//
// Sequences wait in priority classes (higher Priority first, first come first
// served within a class). Each step the scheduler first gives every running
// sequence that is decoding its one token, then spends what is left of the
// step's token budget on prompt chunks (at most ChunkSize tokens of one
// prompt per step, so a long prompt is split over several steps and running
// decodes keep their pace), and finally admits waiting sequences while the
// sequence and token limits allow. A newly admitted sequence first reuses the
// cached blocks of its prompt's prefix (kvcache.Manager.MatchPrefix).
//
// Memory pressure: when a running sequence needs a block and none is free,
// the scheduler preempts the lowest-priority, newest running sequence: its
// blocks are released (full ones stay in the prefix cache, so the recompute
// is often cheap) and it goes back to the waiting queue with its generated
// tokens, to be recomputed later. A waiting sequence of strictly higher
// priority than the lowest running one may likewise preempt it for a sequence
// slot or for blocks; equal priorities wait their turn. Nothing is
// overcommitted. A request whose
// prompt could never fit in the whole cache or the context window is refused
// by Add with ErrTooLarge.
//
// Concurrency: a Scheduler is not safe for concurrent use; the engine calls
// it from its step loop under its own lock. The scheduler never touches KV
// bytes: it plans, the engine runs the forward pass, then calls Complete.
package scheduler

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tandemserve/tandem/engine/kvcache"
)

var (
	// ErrTooLarge reports a sequence that can never fit in the KV cache or
	// the context window.
	ErrTooLarge = errors.New("scheduler: sequence can never fit")
	// ErrInvalidConfig reports a Config that cannot schedule anything.
	ErrInvalidConfig = errors.New("scheduler: invalid config")
	// ErrUnknownSeq reports an operation on a sequence the scheduler does
	// not hold.
	ErrUnknownSeq = errors.New("scheduler: unknown sequence")
	// ErrInvalidSeq reports a sequence with no tokens or an impossible
	// computed count.
	ErrInvalidSeq = errors.New("scheduler: invalid sequence")
)

// Config limits one step.
type Config struct {
	MaxSeqs   int // sequences per step
	MaxTokens int // token rows per step (decodes plus prompt chunks)
	ChunkSize int // prompt tokens of one sequence per step
	MaxSeqLen int // context window in tokens; 0 means only the cache bounds it
}

// DefaultConfig suits a small model on a few CPU cores: 32 sequences and 512
// tokens per step, prompts in 256-token chunks.
func DefaultConfig() Config {
	return Config{MaxSeqs: 32, MaxTokens: 512, ChunkSize: 256}
}

// Validate checks the limits. MaxTokens must cover one token of every
// sequence so that all running decodes can advance in every step.
func (c Config) Validate() error {
	switch {
	case c.MaxSeqs < 1:
		return fmt.Errorf("%w: MaxSeqs %d < 1", ErrInvalidConfig, c.MaxSeqs)
	case c.ChunkSize < 1:
		return fmt.Errorf("%w: ChunkSize %d < 1", ErrInvalidConfig, c.ChunkSize)
	case c.MaxTokens < c.MaxSeqs:
		return fmt.Errorf("%w: MaxTokens %d < MaxSeqs %d", ErrInvalidConfig, c.MaxTokens, c.MaxSeqs)
	case c.MaxSeqLen < 0:
		return fmt.Errorf("%w: MaxSeqLen %d < 0", ErrInvalidConfig, c.MaxSeqLen)
	}
	return nil
}

// State is where a sequence is.
type State uint8

const (
	StateNew State = iota
	StateWaiting
	StateRunning
	StateRemoved
)

// Seq is one sequence as the scheduler sees it. The engine owns it: it sets
// the exported fields before Add and appends sampled tokens to Tokens between
// steps; the scheduler moves it between queues and manages Table and
// Computed.
type Seq struct {
	ID       uint64
	Priority int     // higher runs first
	Tokens   []int32 // prompt, then generated tokens
	// Computed is the number of leading Tokens whose keys and values are in
	// the cache. Set it (with Table) before Add only for a sequence whose KV
	// was imported; otherwise leave both empty.
	Computed int
	Table    kvcache.Table

	state       State
	arrival     uint64
	planned     int // index in the current plan + 1, 0 when not planned
	Preemptions int // times this sequence was preempted
	PrefixHit   int // tokens reused from the prefix cache at the last admission
}

// State returns where the sequence is.
func (s *Seq) State() State { return s.state }

// Work is one sequence's share of a step: compute Tokens[Start:Start+N].
// Logits is set when the last of those tokens is the sequence's newest, so
// its next-token logits are wanted.
type Work struct {
	Seq    *Seq
	Start  int
	N      int
	Logits bool
}

// Plan is one step.
type Plan struct {
	Work      []Work
	Preempted []*Seq // sequences preempted while planning this step
	Tokens    int    // total token rows
}

// Stats are the scheduler's counters.
type Stats struct {
	Running     int
	Waiting     int
	Preemptions uint64
}

// Scheduler holds the waiting and running queues.
type Scheduler struct {
	cfg      Config
	kv       *kvcache.Manager
	capacity int // most tokens one sequence can ever hold

	running []*Seq // sorted by rank
	waiting []*Seq // sorted by rank
	arrival uint64

	preemptions uint64
}

// New returns a scheduler placing sequences in kv's blocks.
func New(cfg Config, kv *kvcache.Manager) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if kv == nil {
		return nil, fmt.Errorf("%w: nil KV manager", ErrInvalidConfig)
	}
	capacity := kv.Config().Blocks * kv.BlockSize()
	if cfg.MaxSeqLen > 0 {
		capacity = min(capacity, cfg.MaxSeqLen)
	}
	return &Scheduler{cfg: cfg, kv: kv, capacity: capacity}, nil
}

// Capacity is the most tokens a sequence can hold: the smaller of the context
// window and the whole cache. A sequence whose Tokens outgrow it must finish.
func (s *Scheduler) Capacity() int { return s.capacity }

// Stats returns the counters.
func (s *Scheduler) Stats() Stats {
	return Stats{Running: len(s.running), Waiting: len(s.waiting), Preemptions: s.preemptions}
}

// Idle reports whether no sequence is waiting or running.
func (s *Scheduler) Idle() bool { return len(s.running) == 0 && len(s.waiting) == 0 }

// Add queues a new sequence. It refuses (ErrTooLarge) a sequence longer than
// Capacity; the sequence's imported blocks, if any, then still belong to the
// caller.
func (s *Scheduler) Add(q *Seq) error {
	if q.state != StateNew {
		return fmt.Errorf("%w: sequence %d added twice", ErrInvalidSeq, q.ID)
	}
	if len(q.Tokens) == 0 {
		return fmt.Errorf("%w: sequence %d has no tokens", ErrInvalidSeq, q.ID)
	}
	if len(q.Tokens) > s.capacity {
		return fmt.Errorf("%w: %d tokens, capacity %d (%d blocks of %d, context %d)",
			ErrTooLarge, len(q.Tokens), s.capacity, s.kv.Config().Blocks, s.kv.BlockSize(), s.cfg.MaxSeqLen)
	}
	if q.Computed < 0 || q.Computed >= len(q.Tokens) || q.Computed > q.Table.Len()*s.kv.BlockSize() {
		return fmt.Errorf("%w: sequence %d: %d computed of %d tokens in %d blocks",
			ErrInvalidSeq, q.ID, q.Computed, len(q.Tokens), q.Table.Len())
	}
	s.arrival++
	q.arrival = s.arrival
	q.state = StateWaiting
	s.waiting = insert(s.waiting, q)
	return nil
}

// Remove takes a finished or cancelled sequence out of the queues and
// releases its blocks. The caller must not call it while a forward pass that
// uses the sequence's blocks is running.
func (s *Scheduler) Remove(q *Seq) error {
	switch q.state {
	case StateRunning:
		s.running = remove(s.running, q)
	case StateWaiting:
		s.waiting = remove(s.waiting, q)
	default:
		return fmt.Errorf("%w: sequence %d in state %d", ErrUnknownSeq, q.ID, q.state)
	}
	q.state = StateRemoved
	return s.kv.Release(&q.Table)
}

// rank orders sequences: higher priority first, then earlier arrival.
func rank(a, b *Seq) int {
	if a.Priority != b.Priority {
		return b.Priority - a.Priority
	}
	switch {
	case a.arrival < b.arrival:
		return -1
	case a.arrival > b.arrival:
		return 1
	}
	return 0
}

func insert(q []*Seq, x *Seq) []*Seq {
	i, _ := slices.BinarySearchFunc(q, x, rank)
	return slices.Insert(q, i, x)
}

func remove(q []*Seq, x *Seq) []*Seq {
	if i := slices.Index(q, x); i >= 0 {
		return slices.Delete(q, i, i+1)
	}
	return q
}
