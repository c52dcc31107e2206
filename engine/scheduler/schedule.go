package scheduler

import (
	"errors"
	"fmt"

	"github.com/tandemserve/tandem/engine/kvcache"
)

// planner is the state of one Schedule call.
type planner struct {
	s      *Scheduler
	p      Plan
	budget int
}

// Schedule plans the next step: decodes of running sequences first, then
// prompt chunks of running sequences, then admissions from the waiting queue,
// reserving every block the plan writes. Preemptions made to find blocks are
// listed in the plan. It returns an error only when the KV manager reports
// something other than a lack of blocks (a bookkeeping bug).
func (s *Scheduler) Schedule() (Plan, error) {
	pl := &planner{s: s, budget: s.cfg.MaxTokens}
	err := pl.run()
	pl.finish()
	if err != nil {
		return Plan{}, err
	}
	return pl.p, nil
}

func (pl *planner) run() error {
	s := pl.s
	for _, decodes := range []bool{true, false} {
		for i := 0; i < len(s.running); i++ {
			q := s.running[i]
			remaining := len(q.Tokens) - q.Computed
			if q.planned != 0 || (remaining == 1) != decodes {
				continue
			}
			n := min(remaining, s.cfg.ChunkSize, pl.budget)
			if n == 0 {
				continue
			}
			// A preemption only removes the last running sequence, so
			// indices before i stay valid; if q itself goes, it was last
			// and the loop ends.
			ok, err := pl.reserve(q, q.Computed+n)
			if err != nil {
				return err
			}
			if ok {
				pl.add(q, n)
			}
		}
	}
	// Admitting while running sequences preempt each other would only
	// thrash: the freed blocks go to the sequences already running.
	if len(pl.p.Preempted) > 0 {
		return nil
	}
	return pl.admit()
}

// admit moves waiting sequences to running in rank order while the limits
// allow. A waiting sequence of strictly higher priority than the lowest
// running one may preempt it for a sequence slot or for blocks; otherwise the
// head of the queue waits and nobody overtakes it.
func (pl *planner) admit() error {
	s := pl.s
	for len(s.waiting) > 0 && pl.budget > 0 {
		q := s.waiting[0]
		if len(s.running) >= s.cfg.MaxSeqs {
			if !pl.outranks(q) {
				return nil
			}
			if err := pl.preempt(s.running[len(s.running)-1]); err != nil {
				return err
			}
			continue
		}
		matched := false
		if q.Table.Len() == 0 {
			hit, err := s.kv.MatchPrefix(&q.Table, q.Tokens)
			if err != nil {
				return err
			}
			q.Computed, q.PrefixHit, matched = hit, hit, true
		}
		n := min(len(q.Tokens)-q.Computed, s.cfg.ChunkSize, pl.budget)
		for {
			err := s.kv.Reserve(&q.Table, q.Computed+n)
			if err == nil {
				break
			}
			if !errors.Is(err, kvcache.ErrOutOfBlocks) {
				return err
			}
			if pl.outranks(q) {
				if err := pl.preempt(s.running[len(s.running)-1]); err != nil {
					return err
				}
				// A preempted victim may have been planned: the budget
				// grew back, but q's chunk stays as computed.
				continue
			}
			// Matched blocks go back to the cache while q waits.
			if matched {
				if err := s.kv.Release(&q.Table); err != nil {
					return err
				}
				q.Computed = 0
			}
			return nil
		}
		s.waiting = s.waiting[1:]
		q.state = StateRunning
		s.running = insert(s.running, q)
		pl.add(q, n)
	}
	return nil
}

// outranks reports whether waiting q has a strictly higher priority than the
// lowest-ranked running sequence, and so may preempt it.
func (pl *planner) outranks(q *Seq) bool {
	r := pl.s.running
	return len(r) > 0 && r[len(r)-1].Priority < q.Priority
}

func (pl *planner) add(q *Seq, n int) {
	pl.p.Work = append(pl.p.Work, Work{Seq: q, Start: q.Computed, N: n, Logits: q.Computed+n == len(q.Tokens)})
	q.planned = len(pl.p.Work)
	pl.budget -= n
}

// reserve grows q's table to hold tokens, preempting the lowest-ranked
// running sequences until it fits. It reports false when q itself had to go.
func (pl *planner) reserve(q *Seq, tokens int) (bool, error) {
	s := pl.s
	for {
		err := s.kv.Reserve(&q.Table, tokens)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, kvcache.ErrOutOfBlocks) {
			return false, err
		}
		victim := s.running[len(s.running)-1]
		if err := pl.preempt(victim); err != nil {
			return false, err
		}
		if victim == q {
			return false, nil
		}
	}
}

// preempt frees a running sequence's blocks and sends it back to wait.
func (pl *planner) preempt(q *Seq) error {
	s := pl.s
	if q.planned != 0 {
		w := &pl.p.Work[q.planned-1]
		pl.budget += w.N
		w.Seq = nil
		q.planned = 0
	}
	s.running = remove(s.running, q)
	if err := s.kv.Release(&q.Table); err != nil {
		return fmt.Errorf("scheduler: preempt sequence %d: %w", q.ID, err)
	}
	q.Computed = 0
	q.Preemptions++
	q.state = StateWaiting
	s.waiting = insert(s.waiting, q)
	s.preemptions++
	pl.p.Preempted = append(pl.p.Preempted, q)
	return nil
}

// finish drops work of preempted sequences and totals the plan.
func (pl *planner) finish() {
	kept := pl.p.Work[:0]
	for _, w := range pl.p.Work {
		if w.Seq == nil {
			continue
		}
		w.Seq.planned = 0
		kept = append(kept, w)
		pl.p.Tokens += w.N
	}
	pl.p.Work = kept
}

// Complete records that the plan's forward pass stored its tokens' keys and
// values, and registers newly full blocks in the prefix cache. Call it once
// per successful step, before removing any of the plan's sequences; after a
// failed forward pass skip it and the tokens are computed again next step.
func (s *Scheduler) Complete(p Plan) {
	for _, w := range p.Work {
		q := w.Seq
		q.Computed = w.Start + w.N
		s.kv.CommitFull(&q.Table, q.Tokens, q.Computed)
	}
}
