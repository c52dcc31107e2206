// Package sample turns next-token logits into tokens and decides when a
// sequence stops.
//
// A Sampler is per sequence and not safe for concurrent use. Its pipeline
// follows llama.cpp's order: penalties (repetition over the last RepeatLastN
// tokens, frequency and presence over generated tokens) act on logits, then
// greedy selection when Temperature is 0, else temperature, top-k, top-p
// (nucleus) and min-p filters and a draw from a seeded generator, so the same
// seed and logits always give the same tokens. Stop strings are matched on
// decoded text by StopMatcher, which holds back text that might be the start of
// a stop string so a streaming client never sees part of one.
package sample

import (
	"errors"
	"fmt"
	"math"
)

// ErrInvalidParams wraps every parameter validation error; the message names
// the offending field.
var ErrInvalidParams = errors.New("sample: invalid sampling parameters")

// Limits on parameters that come from the network.
const (
	MaxStopStrings   = 16
	MaxStopStringLen = 256
	MaxStopTokenIDs  = 64
	MaxTopK          = 1 << 20
	MaxRepeatLastN   = 1 << 16
)

// Params controls sampling and stopping. The zero value of each optional
// filter disables it; DefaultParams gives the serving defaults.
type Params struct {
	// Temperature 0 selects greedy decoding.
	Temperature float32
	// TopK keeps the K most likely tokens; 0 disables.
	TopK int
	// TopP keeps the smallest set of tokens whose probability mass reaches
	// TopP; 1 (or 0) disables.
	TopP float32
	// MinP drops tokens less likely than MinP times the most likely one; 0 disables.
	MinP float32
	// RepetitionPenalty divides positive (multiplies negative) logits of
	// tokens seen in the last RepeatLastN tokens; 1 (or 0) disables.
	RepetitionPenalty float32
	RepeatLastN       int
	// FrequencyPenalty and PresencePenalty follow the OpenAI definition over
	// generated tokens: logit -= count*frequency + (count>0)*presence.
	FrequencyPenalty float32
	PresencePenalty  float32
	// Seed makes draws reproducible when HasSeed is set; otherwise the
	// sampler seeds itself randomly.
	Seed    uint64
	HasSeed bool
	// MaxTokens bounds generated tokens; it must be positive.
	MaxTokens int
	// Stop strings end generation; the matched text is not emitted.
	Stop []string
	// StopTokenIDs end generation in addition to the model's end-of-generation tokens.
	StopTokenIDs []int32
	// IgnoreEOS keeps generating past end-of-generation tokens (benchmarks).
	IgnoreEOS bool
}

// DefaultParams returns greedy decoding of up to 256 tokens.
func DefaultParams() Params {
	return Params{TopP: 1, RepetitionPenalty: 1, RepeatLastN: 64, MaxTokens: 256}
}

// Greedy reports whether the parameters select argmax decoding.
func (p *Params) Greedy() bool { return p.Temperature == 0 }

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidParams, field, fmt.Sprintf(format, args...))
}

func finite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

// Validate checks every field against its range. vocab is the model's
// vocabulary size, used to check stop token ids (0 skips that check).
func (p *Params) Validate(vocab int) error {
	switch {
	case !finite(p.Temperature) || p.Temperature < 0 || p.Temperature > 100:
		return invalid("temperature", "must be in [0, 100], got %v", p.Temperature)
	case p.TopK < 0 || p.TopK > MaxTopK:
		return invalid("top_k", "must be in [0, %d], got %d", MaxTopK, p.TopK)
	case !finite(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return invalid("top_p", "must be in [0, 1], got %v", p.TopP)
	case !finite(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return invalid("min_p", "must be in [0, 1], got %v", p.MinP)
	case !finite(p.RepetitionPenalty) || p.RepetitionPenalty < 0 || p.RepetitionPenalty > 10:
		return invalid("repetition_penalty", "must be in [0, 10], got %v", p.RepetitionPenalty)
	case p.RepeatLastN < 0 || p.RepeatLastN > MaxRepeatLastN:
		return invalid("repeat_last_n", "must be in [0, %d], got %d", MaxRepeatLastN, p.RepeatLastN)
	case !finite(p.FrequencyPenalty) || p.FrequencyPenalty < -2 || p.FrequencyPenalty > 2:
		return invalid("frequency_penalty", "must be in [-2, 2], got %v", p.FrequencyPenalty)
	case !finite(p.PresencePenalty) || p.PresencePenalty < -2 || p.PresencePenalty > 2:
		return invalid("presence_penalty", "must be in [-2, 2], got %v", p.PresencePenalty)
	case p.MaxTokens <= 0:
		return invalid("max_tokens", "must be positive, got %d", p.MaxTokens)
	case len(p.Stop) > MaxStopStrings:
		return invalid("stop", "has %d strings, at most %d allowed", len(p.Stop), MaxStopStrings)
	case len(p.StopTokenIDs) > MaxStopTokenIDs:
		return invalid("stop_token_ids", "has %d ids, at most %d allowed", len(p.StopTokenIDs), MaxStopTokenIDs)
	}
	for i, s := range p.Stop {
		if s == "" || len(s) > MaxStopStringLen {
			return invalid("stop", "[%d] must be 1 to %d bytes long", i, MaxStopStringLen)
		}
	}
	for i, id := range p.StopTokenIDs {
		if id < 0 || (vocab > 0 && int(id) >= vocab) {
			return invalid("stop_token_ids", "[%d] = %d is outside the vocabulary", i, id)
		}
	}
	return nil
}
