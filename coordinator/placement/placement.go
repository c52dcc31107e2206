// Package placement chooses the prefill and decode workers for one request.
//
// A policy is a pipeline of small plugins, built by name from JSON: for each of the two worker
// roles, filters drop ineligible candidates, scorers give every survivor a score in [0,1] that is
// combined as a weighted sum, and a picker takes the winner. A decider then says whether remote
// prefill pays for this request or the decode worker should prefill it itself (when most of the
// prompt is already cached, shipping KV costs more than recomputing the short rest).
//
// The package is pure computation over a candidate list the caller builds from replicated state
// plus soft load reports; it holds no locks and does no I/O, so a Pipeline may be used from many
// goroutines at once.
package placement

import (
	"errors"
	"fmt"
	"slices"
)

// Sentinel errors.
var (
	// ErrNoCapacity means no worker can take the request right now.
	ErrNoCapacity = errors.New("placement: no worker can take the request")
	// ErrConfig means a policy specification is invalid.
	ErrConfig = errors.New("placement: invalid policy")
	// ErrInvalidRequest means the request itself is malformed.
	ErrInvalidRequest = errors.New("placement: invalid request")
)

// Role selects which half of the pipeline runs.
type Role string

// Roles.
const (
	RolePrefill Role = "prefill"
	RoleDecode  Role = "decode"
)

// Load is a worker's latest self-reported load plus the leader's optimistic charges for placements
// made since that report.
type Load struct {
	QueueDepth    int
	Running       int
	Waiting       int
	FreeKVBlocks  int
	TotalKVBlocks int
	BlockTokens   int
	TokensPerSec  float64
}

// PrefixSet is a bounded set of block hashes a worker holds in its prefix cache.
type PrefixSet interface {
	Contains(h uint64) bool
}

// Candidate is one worker the request could go to.
type Candidate struct {
	ID            string
	Role          Role
	GRPCAddr      string
	TransportAddr string
	Load          Load
	Prefix        PrefixSet // may be nil
}

// Request is what placement knows about a request.
type Request struct {
	Model        string
	PromptTokens int
	// BlockHashes is the hash chain of the prompt's full blocks: hash i covers blocks 0..i, so a
	// worker holding hash i holds the whole prefix up to block i.
	BlockHashes []uint64
	BlockTokens int
	MaxTokens   int
	Priority    int
	Exclude     []string
}

// Validate checks the request's shape.
func (r *Request) Validate() error {
	switch {
	case r.Model == "":
		return fmt.Errorf("%w: empty model", ErrInvalidRequest)
	case r.PromptTokens <= 0:
		return fmt.Errorf("%w: prompt must have at least one token", ErrInvalidRequest)
	case r.MaxTokens < 0:
		return fmt.Errorf("%w: negative max tokens", ErrInvalidRequest)
	case r.BlockTokens < 0:
		return fmt.Errorf("%w: negative block size", ErrInvalidRequest)
	case r.BlockTokens > 0 && len(r.BlockHashes)*r.BlockTokens > r.PromptTokens:
		return fmt.Errorf("%w: %d block hashes of %d tokens exceed a %d-token prompt",
			ErrInvalidRequest, len(r.BlockHashes), r.BlockTokens, r.PromptTokens)
	case len(r.BlockHashes) > r.PromptTokens:
		return fmt.Errorf("%w: more block hashes than prompt tokens", ErrInvalidRequest)
	}
	return nil
}

// Excluded reports whether id is on the request's exclude list.
func (r *Request) Excluded(id string) bool { return slices.Contains(r.Exclude, id) }

// CachedBlocks returns how many leading blocks of the request's prompt c holds.
func CachedBlocks(r *Request, c *Candidate) int {
	if c == nil || c.Prefix == nil {
		return 0
	}
	n := 0
	for _, h := range r.BlockHashes {
		if !c.Prefix.Contains(h) {
			break
		}
		n++
	}
	return n
}

// Filter removes candidates that must not receive the request. It may reorder or reuse in.
type Filter interface {
	Name() string
	Filter(r *Request, in []Candidate) []Candidate
}

// Scorer writes a score in [0,1] per candidate into out (len(out) == len(cands)).
type Scorer interface {
	Name() string
	Score(r *Request, cands []Candidate, out []float64)
}

// Picker chooses the index of the winning candidate given combined scores; len(cands) > 0.
type Picker interface {
	Name() string
	Pick(r *Request, cands []Candidate, scores []float64) int
}

// Decider says whether the request should be prefilled on a separate prefill worker. cached is the
// number of prompt blocks the chosen decode worker already holds.
type Decider interface {
	Name() string
	RemotePrefill(r *Request, decode *Candidate, cachedOnDecode int) bool
}

// MaxPrefixHashes bounds a worker's reported prefix summary: the most recent hashes win.
const MaxPrefixHashes = 4096

// HashSet is a PrefixSet built from a worker's report.
type HashSet map[uint64]struct{}

var _ PrefixSet = HashSet(nil)

// NewHashSet keeps at most MaxPrefixHashes of hs; reports list the most recently used first.
func NewHashSet(hs []uint64) HashSet {
	if len(hs) > MaxPrefixHashes {
		hs = hs[:MaxPrefixHashes]
	}
	s := make(HashSet, len(hs))
	for _, h := range hs {
		s[h] = struct{}{}
	}
	return s
}

// Contains reports whether h is in the set.
func (s HashSet) Contains(h uint64) bool { _, ok := s[h]; return ok }
