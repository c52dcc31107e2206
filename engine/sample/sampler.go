package sample

import (
	crand "crypto/rand"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
)

// Sampler draws the tokens of one sequence.
type Sampler struct {
	p       Params
	rng     *rand.Rand
	history []int32       // prompt and generated tokens, for the repetition penalty
	counts  map[int32]int // generated-token counts, for frequency/presence penalties

	// scratch reused across calls to keep the hot path allocation-free
	cand []candidate
}

type candidate struct {
	id    int32
	logit float32
	prob  float32
}

// New returns a sampler for p; p must be valid.
func New(p Params) *Sampler {
	seed := p.Seed
	if !p.HasSeed {
		var b [8]byte
		_, _ = crand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	return &Sampler{
		p:      p,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		counts: make(map[int32]int),
	}
}

// Params returns the sampler's parameters.
func (s *Sampler) Params() Params { return s.p }

// AcceptPrompt records prompt tokens for the repetition penalty.
func (s *Sampler) AcceptPrompt(tokens []int32) {
	s.history = append(s.history, tokens...)
	s.trimHistory()
}

// Accept records a generated token.
func (s *Sampler) Accept(token int32) {
	s.history = append(s.history, token)
	s.counts[token]++
	s.trimHistory()
}

func (s *Sampler) trimHistory() {
	if n := s.p.RepeatLastN; n > 0 && len(s.history) > 2*n {
		s.history = append(s.history[:0], s.history[len(s.history)-n:]...)
	}
}

// Sample picks the next token from logits. It modifies logits in place
// (penalties) and does not record the token: call Accept with it.
func (s *Sampler) Sample(logits []float32) int32 {
	s.applyPenalties(logits)
	if s.p.Greedy() {
		return argmax(logits)
	}
	return s.draw(logits)
}

func (s *Sampler) applyPenalties(logits []float32) {
	if rp := s.p.RepetitionPenalty; rp != 0 && rp != 1 && s.p.RepeatLastN > 0 {
		recent := s.history
		if len(recent) > s.p.RepeatLastN {
			recent = recent[len(recent)-s.p.RepeatLastN:]
		}
		seen := make(map[int32]struct{}, len(recent))
		for _, t := range recent {
			if int(t) >= len(logits) || t < 0 {
				continue
			}
			if _, dup := seen[t]; dup {
				continue
			}
			seen[t] = struct{}{}
			if logits[t] > 0 {
				logits[t] /= rp
			} else {
				logits[t] *= rp
			}
		}
	}
	if s.p.FrequencyPenalty != 0 || s.p.PresencePenalty != 0 {
		for t, n := range s.counts {
			if int(t) < len(logits) && t >= 0 {
				logits[t] -= float32(n)*s.p.FrequencyPenalty + s.p.PresencePenalty
			}
		}
	}
}

// argmax returns the index of the largest logit, the lowest index on ties,
// so greedy decoding is deterministic.
func argmax(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

func (s *Sampler) draw(logits []float32) int32 {
	invT := 1 / s.p.Temperature
	maxLogit := logits[argmax(logits)]
	// Softmax over the whole vocabulary; filters then work on probabilities.
	var sum float64
	probs := s.cand[:0]
	for i, l := range logits {
		e := math.Exp(float64((l - maxLogit) * invT))
		sum += e
		probs = append(probs, candidate{id: int32(i), logit: l, prob: float32(e)})
	}
	inv := float32(1 / sum)
	for i := range probs {
		probs[i].prob *= inv
	}
	s.cand = probs

	cand := probs
	if mp := s.p.MinP; mp > 0 {
		// The top token has probability exp(0)*inv.
		floor := mp * inv
		cand = filter(cand, func(c candidate) bool { return c.prob >= floor })
	}
	topP := s.p.TopP
	usesTopP := topP > 0 && topP < 1
	if usesTopP && s.p.TopK == 0 {
		// Tokens below (1-topP)/V together hold less than 1-topP of the
		// mass, so the nucleus never needs them: drop them before sorting
		// instead of sorting the whole vocabulary.
		eps := (1 - topP) / float32(len(logits))
		cand = filter(cand, func(c candidate) bool { return c.prob >= eps })
	}
	if s.p.TopK > 0 || usesTopP {
		cand = s.nucleus(cand, s.p.TopK, usesTopP, topP)
	}
	var total float64
	for _, c := range cand {
		total += float64(c.prob)
	}
	r := s.rng.Float64() * total
	for _, c := range cand {
		r -= float64(c.prob)
		if r < 0 {
			return c.id
		}
	}
	return cand[len(cand)-1].id
}

// nucleus returns the most likely candidates, in decreasing probability:
// at most topK of them (0 = no limit) and, when usesTopP, the fewest whose
// mass reaches topP of the candidates' total. It pops a max-heap instead of
// sorting the vocabulary, since only the head of the order is needed.
func (s *Sampler) nucleus(cand []candidate, topK int, usesTopP bool, topP float32) []candidate {
	var total float32
	for _, c := range cand {
		total += c.prob
	}
	h := cand
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
	want := len(h)
	if topK > 0 && topK < want {
		want = topK
	}
	// Popped elements accumulate at the end of h, largest first from the back.
	var mass float32
	n := 0
	for n < want {
		last := len(h) - 1 - n
		top := h[0]
		h[0] = h[last]
		h[last] = top
		siftDown(h[:last], 0)
		n++
		mass += top.prob
		if usesTopP && mass >= topP*total {
			break
		}
	}
	out := h[len(h)-n:]
	slices.Reverse(out)
	return out
}

// before orders candidates by decreasing probability, then increasing id.
func before(a, b candidate) bool {
	return a.prob > b.prob || (a.prob == b.prob && a.id < b.id)
}

func siftDown(h []candidate, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		best := l
		if r := l + 1; r < len(h) && before(h[r], h[l]) {
			best = r
		}
		if !before(h[best], h[i]) {
			return
		}
		h[i], h[best] = h[best], h[i]
		i = best
	}
}

// filter keeps the candidates for which keep is true, in place. It always
// keeps at least the most likely candidate so the draw has a choice.
func filter(c []candidate, keep func(candidate) bool) []candidate {
	best := 0
	for i := range c {
		if c[i].prob > c[best].prob {
			best = i
		}
	}
	top := c[best]
	out := c[:0]
	for _, x := range c {
		if keep(x) {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		out = append(out, top)
	}
	return out
}
