package sample

import "strings"

// StopMatcher finds stop strings in streamed text. It holds back the tail of
// the text that could still become a stop string, so the caller only ever
// emits text that is certain to be part of the output.
type StopMatcher struct {
	stops   []string
	pending string
}

// NewStopMatcher returns a matcher for stops (empty strings are ignored).
func NewStopMatcher(stops []string) *StopMatcher {
	m := &StopMatcher{}
	for _, s := range stops {
		if s != "" {
			m.stops = append(m.stops, s)
		}
	}
	return m
}

// Push adds decoded text. It returns the text that may be emitted now and
// whether a stop string was found; after a stop the text before the stop
// string is returned and the rest is dropped.
func (m *StopMatcher) Push(text string) (emit string, stopped bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	buf := m.pending + text
	cut := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		m.pending = ""
		return buf[:cut], true
	}
	hold := 0
	for _, s := range m.stops {
		for n := min(len(s)-1, len(buf)); n > hold; n-- {
			if strings.HasSuffix(buf, s[:n]) {
				hold = n
				break
			}
		}
	}
	m.pending = buf[len(buf)-hold:]
	return buf[:len(buf)-hold], false
}

// Flush returns the held-back text when generation ends for another reason.
func (m *StopMatcher) Flush() string {
	s := m.pending
	m.pending = ""
	return s
}

// FinishReason says why a sequence stopped.
type FinishReason string

const (
	FinishNone   FinishReason = ""
	FinishStop   FinishReason = "stop"   // end-of-generation token, stop token or stop string
	FinishLength FinishReason = "length" // MaxTokens or the context window
)

// CheckToken reports whether token ends generation: an end-of-generation
// token (unless IgnoreEOS) or one of StopTokenIDs, or the MaxTokens limit
// reached after generated tokens. isEOG classifies the model's own tokens.
func (p *Params) CheckToken(token int32, generated int, isEOG func(int32) bool) FinishReason {
	if !p.IgnoreEOS && isEOG != nil && isEOG(token) {
		return FinishStop
	}
	for _, id := range p.StopTokenIDs {
		if id == token {
			return FinishStop
		}
	}
	if generated >= p.MaxTokens {
		return FinishLength
	}
	return FinishNone
}
