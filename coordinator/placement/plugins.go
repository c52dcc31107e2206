package placement

import (
	"encoding/json"
	"fmt"
)

var (
	_ Filter  = (*kvCapacityFilter)(nil)
	_ Filter  = (*queueLimitFilter)(nil)
	_ Scorer  = (*loadScorer)(nil)
	_ Scorer  = (*prefixScorer)(nil)
	_ Scorer  = (*kvCapacityScorer)(nil)
	_ Picker  = (*maxScorePicker)(nil)
	_ Decider = (*thresholdDecider)(nil)
	_ Decider = fixedDecider{}
)

// blocksNeeded is how many KV blocks the request occupies at its longest on a decode worker.
func blocksNeeded(r *Request, c *Candidate) int {
	bt := c.Load.BlockTokens
	if bt <= 0 {
		bt = r.BlockTokens
	}
	if bt <= 0 {
		return 0
	}
	return (r.PromptTokens + r.MaxTokens + bt - 1) / bt
}

// kvCapacityFilter drops decode workers whose free KV blocks cannot hold the request. Workers that
// report no KV capacity at all (total 0) are kept: they have not reported yet, and the load scorer
// ranks them.
type kvCapacityFilter struct{}

func newKVCapacityFilter(p json.RawMessage) (Filter, error) {
	if err := decodeParams("kv-capacity", p, &struct{}{}); err != nil {
		return nil, err
	}
	return kvCapacityFilter{}, nil
}

func (kvCapacityFilter) Name() string { return "kv-capacity" }

func (kvCapacityFilter) Filter(r *Request, in []Candidate) []Candidate {
	out := in[:0]
	for i := range in {
		c := &in[i]
		if c.Load.TotalKVBlocks == 0 || c.Load.FreeKVBlocks >= blocksNeeded(r, c) {
			out = append(out, *c)
		}
	}
	return out
}

// queueLimitFilter drops workers whose queue is at or above max_queue: admission control, so a
// hot cluster answers ResourceExhausted instead of growing queues without bound. Requests with
// priority > 0 use priority_max_queue instead (default: twice max_queue), so interactive traffic
// is still admitted when batch traffic has filled the normal limit.
type queueLimitFilter struct{ MaxQueue, PriorityMaxQueue int }

func newQueueLimitFilter(p json.RawMessage) (Filter, error) {
	var params struct {
		MaxQueue         *int `json:"max_queue"`
		PriorityMaxQueue *int `json:"priority_max_queue"`
	}
	if err := decodeParams("queue-limit", p, &params); err != nil {
		return nil, err
	}
	f := queueLimitFilter{MaxQueue: 64}
	if params.MaxQueue != nil {
		f.MaxQueue = *params.MaxQueue
	}
	f.PriorityMaxQueue = 2 * f.MaxQueue
	if params.PriorityMaxQueue != nil {
		f.PriorityMaxQueue = *params.PriorityMaxQueue
	}
	if f.MaxQueue <= 0 || f.PriorityMaxQueue < f.MaxQueue {
		return nil, fmt.Errorf("%w: queue-limit: need 0 < max_queue <= priority_max_queue", ErrConfig)
	}
	return f, nil
}

func (queueLimitFilter) Name() string { return "queue-limit" }

func (f queueLimitFilter) Filter(r *Request, in []Candidate) []Candidate {
	limit := f.MaxQueue
	if r.Priority > 0 {
		limit = f.PriorityMaxQueue
	}
	out := in[:0]
	for _, c := range in {
		if c.Load.QueueDepth+c.Load.Waiting < limit {
			out = append(out, c)
		}
	}
	return out
}

// loadScorer prefers idle workers: 1 for an empty worker, falling as queued and running work grows.
type loadScorer struct{}

func newLoadScorer(p json.RawMessage) (Scorer, error) {
	if err := decodeParams("load", p, &struct{}{}); err != nil {
		return nil, err
	}
	return loadScorer{}, nil
}

func (loadScorer) Name() string { return "load" }

func (loadScorer) Score(_ *Request, cands []Candidate, out []float64) {
	for i, c := range cands {
		// Queued work weighs double running work: it has not started, so it delays us fully.
		w := float64(2*(c.Load.QueueDepth+c.Load.Waiting) + c.Load.Running)
		out[i] = 1 / (1 + w/4)
	}
}

// prefixScorer prefers the worker that already holds the longest prefix of the prompt.
type prefixScorer struct{}

func newPrefixScorer(p json.RawMessage) (Scorer, error) {
	if err := decodeParams("prefix-cache", p, &struct{}{}); err != nil {
		return nil, err
	}
	return prefixScorer{}, nil
}

func (prefixScorer) Name() string { return "prefix-cache" }

func (prefixScorer) Score(r *Request, cands []Candidate, out []float64) {
	if len(r.BlockHashes) == 0 {
		return
	}
	for i := range cands {
		out[i] = float64(CachedBlocks(r, &cands[i])) / float64(len(r.BlockHashes))
	}
}

// kvCapacityScorer prefers decode workers with the largest free fraction of KV memory.
type kvCapacityScorer struct{}

func newKVCapacityScorer(p json.RawMessage) (Scorer, error) {
	if err := decodeParams("kv-capacity", p, &struct{}{}); err != nil {
		return nil, err
	}
	return kvCapacityScorer{}, nil
}

func (kvCapacityScorer) Name() string { return "kv-capacity" }

func (kvCapacityScorer) Score(_ *Request, cands []Candidate, out []float64) {
	for i, c := range cands {
		if c.Load.TotalKVBlocks > 0 {
			out[i] = float64(c.Load.FreeKVBlocks) / float64(c.Load.TotalKVBlocks)
		}
	}
}

// maxScorePicker takes the highest score. Ties go to the shorter queue, then to the candidate
// whose position matches the request's first block hash, which spreads identical requests across
// equal workers without any shared counter.
type maxScorePicker struct{}

func newMaxScorePicker(p json.RawMessage) (Picker, error) {
	if err := decodeParams("max-score", p, &struct{}{}); err != nil {
		return nil, err
	}
	return maxScorePicker{}, nil
}

func (maxScorePicker) Name() string { return "max-score" }

func (maxScorePicker) Pick(r *Request, cands []Candidate, scores []float64) int {
	const eps = 1e-9
	best := -1
	var ties int
	for i := range cands {
		switch {
		case best < 0 || scores[i] > scores[best]+eps:
			best, ties = i, 1
		case scores[i] >= scores[best]-eps:
			qi := cands[i].Load.QueueDepth + cands[i].Load.Waiting
			qb := cands[best].Load.QueueDepth + cands[best].Load.Waiting
			if qi < qb {
				best, ties = i, 1
			} else if qi == qb {
				ties++
				var h uint64
				if len(r.BlockHashes) > 0 {
					h = r.BlockHashes[0]
				} else {
					h = uint64(r.PromptTokens)
				}
				// Reservoir-style choice keyed by the request, deterministic for equal inputs.
				if (h^uint64(i)*0x9e3779b97f4a7c15)%uint64(ties) == 0 {
					best = i
				}
			}
		}
	}
	return best
}

// thresholdDecider sends a request to a prefill worker only when at least MinUncachedTokens of its
// prompt are not cached on the decode worker: below that, the KV transfer costs more than the
// decode worker computing the rest itself.
type thresholdDecider struct{ MinUncachedTokens int }

func newThresholdDecider(p json.RawMessage) (Decider, error) {
	d := thresholdDecider{MinUncachedTokens: 256}
	var params struct {
		MinUncachedTokens *int `json:"min_uncached_tokens"`
	}
	if err := decodeParams("uncached-threshold", p, &params); err != nil {
		return nil, err
	}
	if params.MinUncachedTokens != nil {
		if *params.MinUncachedTokens < 0 {
			return nil, fmt.Errorf("%w: uncached-threshold: min_uncached_tokens must be >= 0", ErrConfig)
		}
		d.MinUncachedTokens = *params.MinUncachedTokens
	}
	return d, nil
}

func (thresholdDecider) Name() string { return "uncached-threshold" }

func (d thresholdDecider) RemotePrefill(r *Request, _ *Candidate, cachedOnDecode int) bool {
	uncached := r.PromptTokens - cachedOnDecode*r.BlockTokens
	return uncached >= d.MinUncachedTokens
}

// fixedDecider always or never prefills remotely (benchmarks, single-pool deployments).
type fixedDecider struct{ remote bool }

func (d fixedDecider) Name() string {
	if d.remote {
		return "always-remote"
	}
	return "never-remote"
}

func (d fixedDecider) RemotePrefill(*Request, *Candidate, int) bool { return d.remote }
