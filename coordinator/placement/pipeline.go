package placement

// WeightedScorer is a scorer and its weight in the sum.
type WeightedScorer struct {
	Scorer Scorer
	Weight float64
}

// Profile is the pipeline for one role.
type Profile struct {
	Filters []Filter
	Scorers []WeightedScorer
	Picker  Picker
}

// Pipeline is a complete policy.
type Pipeline struct {
	Prefill Profile
	Decode  Profile
	Decider Decider
}

// Result is a placement decision. Prefill is nil when the decode worker prefills locally.
type Result struct {
	Prefill *Candidate
	Decode  Candidate
}

// Place runs the policy. prefill and decode are the candidates of each role; the slices are
// filtered in place and must not be used by the caller afterwards.
func (p *Pipeline) Place(r *Request, prefill, decode []Candidate) (Result, error) {
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	d, ok := p.Decode.choose(r, decode)
	if !ok {
		return Result{}, ErrNoCapacity
	}
	res := Result{Decode: d}
	if !p.Decider.RemotePrefill(r, &d, CachedBlocks(r, &d)) {
		return res, nil
	}
	pf, ok := p.Prefill.choose(r, prefill)
	if ok {
		res.Prefill = &pf
	}
	// No prefill worker available: the decode worker prefills, which is slower but correct.
	return res, nil
}

func (pr *Profile) choose(r *Request, cands []Candidate) (Candidate, bool) {
	for _, f := range pr.Filters {
		cands = f.Filter(r, cands)
		if len(cands) == 0 {
			return Candidate{}, false
		}
	}
	if len(cands) == 0 {
		return Candidate{}, false
	}
	total := make([]float64, len(cands))
	if len(pr.Scorers) > 0 {
		buf := make([]float64, len(cands))
		for _, ws := range pr.Scorers {
			clear(buf)
			ws.Scorer.Score(r, cands, buf)
			for i, s := range buf {
				total[i] += ws.Weight * clamp01(s)
			}
		}
	}
	return cands[pr.Picker.Pick(r, cands, total)], true
}

func clamp01(s float64) float64 {
	switch {
	case s != s || s < 0: // NaN or negative: a broken scorer must not win
		return 0
	case s > 1:
		return 1
	}
	return s
}
