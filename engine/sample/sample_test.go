package sample

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	ok := DefaultParams()
	tests := []struct {
		name  string
		edit  func(*Params)
		field string // "" means valid
	}{
		{"defaults", func(*Params) {}, ""},
		{"sampling", func(p *Params) { p.Temperature, p.TopK, p.TopP, p.MinP = 0.8, 40, 0.95, 0.05 }, ""},
		{"negative temperature", func(p *Params) { p.Temperature = -1 }, "temperature"},
		{"NaN temperature", func(p *Params) { p.Temperature = float32(math.NaN()) }, "temperature"},
		{"top_p above 1", func(p *Params) { p.TopP = 1.5 }, "top_p"},
		{"negative top_k", func(p *Params) { p.TopK = -3 }, "top_k"},
		{"min_p", func(p *Params) { p.MinP = 2 }, "min_p"},
		{"repetition penalty", func(p *Params) { p.RepetitionPenalty = float32(math.Inf(1)) }, "repetition_penalty"},
		{"frequency penalty", func(p *Params) { p.FrequencyPenalty = 3 }, "frequency_penalty"},
		{"presence penalty", func(p *Params) { p.PresencePenalty = -2.5 }, "presence_penalty"},
		{"zero max tokens", func(p *Params) { p.MaxTokens = 0 }, "max_tokens"},
		{"empty stop", func(p *Params) { p.Stop = []string{"ok", ""} }, "stop"},
		{"too many stops", func(p *Params) { p.Stop = make([]string, MaxStopStrings+1) }, "stop"},
		{"long stop", func(p *Params) { p.Stop = []string{strings.Repeat("x", MaxStopStringLen+1)} }, "stop"},
		{"stop id outside vocab", func(p *Params) { p.StopTokenIDs = []int32{5, 100} }, "stop_token_ids"},
		{"negative stop id", func(p *Params) { p.StopTokenIDs = []int32{-1} }, "stop_token_ids"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.edit(&p)
			err := p.Validate(100)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidParams) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Validate() = %v, want ErrInvalidParams naming %q", err, tt.field)
			}
		})
	}
}

func TestGreedyPicksLowestIndexOfMax(t *testing.T) {
	s := New(DefaultParams())
	if got := s.Sample([]float32{1, 3, 2, 3}); got != 1 {
		t.Fatalf("Sample = %d, want 1", got)
	}
}

func drawMany(p Params, logits []float32, n int) map[int32]int {
	s := New(p)
	seen := map[int32]int{}
	buf := make([]float32, len(logits))
	for i := 0; i < n; i++ {
		copy(buf, logits)
		seen[s.Sample(buf)]++
	}
	return seen
}

func logitsOf(probs ...float64) []float32 {
	out := make([]float32, len(probs))
	for i, p := range probs {
		out[i] = float32(math.Log(p))
	}
	return out
}

func TestFilters(t *testing.T) {
	logits := logitsOf(0.5, 0.3, 0.15, 0.05)
	base := DefaultParams()
	base.Temperature, base.HasSeed, base.Seed = 1, true, 7
	tests := []struct {
		name    string
		edit    func(*Params)
		allowed []int32
	}{
		{"no filter reaches every token", func(*Params) {}, []int32{0, 1, 2, 3}},
		{"top_k 2", func(p *Params) { p.TopK = 2 }, []int32{0, 1}},
		{"top_k 1 is greedy", func(p *Params) { p.TopK = 1 }, []int32{0}},
		{"top_p 0.7 keeps the nucleus", func(p *Params) { p.TopP = 0.7 }, []int32{0, 1}},
		{"top_p 0.9", func(p *Params) { p.TopP = 0.9 }, []int32{0, 1, 2}},
		{"min_p 0.5 drops tokens under half the best", func(p *Params) { p.MinP = 0.5 }, []int32{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.edit(&p)
			seen := drawMany(p, logits, 4000)
			var got []int32
			for id := int32(0); id < 4; id++ {
				if seen[id] > 0 {
					got = append(got, id)
				}
			}
			if diff := cmp.Diff(tt.allowed, got); diff != "" {
				t.Fatalf("tokens drawn (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTemperatureFrequencies(t *testing.T) {
	p := DefaultParams()
	p.Temperature, p.HasSeed, p.Seed = 1, true, 1
	seen := drawMany(p, logitsOf(0.6, 0.3, 0.1), 20000)
	for id, want := range []float64{0.6, 0.3, 0.1} {
		got := float64(seen[int32(id)]) / 20000
		if math.Abs(got-want) > 0.02 {
			t.Errorf("token %d drawn with frequency %.3f, want %.2f", id, got, want)
		}
	}
}

func TestSeedReproducible(t *testing.T) {
	p := DefaultParams()
	p.Temperature, p.TopP, p.HasSeed, p.Seed = 0.9, 0.95, true, 42
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)))
	}
	run := func() []int32 {
		s := New(p)
		var out []int32
		buf := make([]float32, len(logits))
		for i := 0; i < 50; i++ {
			copy(buf, logits)
			tok := s.Sample(buf)
			s.Accept(tok)
			out = append(out, tok)
		}
		return out
	}
	if diff := cmp.Diff(run(), run()); diff != "" {
		t.Fatalf("same seed gave different tokens (-first +second):\n%s", diff)
	}
}

func TestPenalties(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Params)
		want []float32
	}{
		{"repetition", func(p *Params) { p.RepetitionPenalty = 2 }, []float32{1, -4, 3}},
		{"frequency", func(p *Params) { p.FrequencyPenalty = 0.5 }, []float32{1, -2.5, 3}},
		{"presence", func(p *Params) { p.PresencePenalty = 1 }, []float32{1, -3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultParams()
			tt.edit(&p)
			s := New(p)
			s.Accept(0)
			s.Accept(0)
			s.Accept(1)
			logits := []float32{2, -2, 3}
			s.applyPenalties(logits)
			if diff := cmp.Diff(tt.want, logits); diff != "" {
				t.Fatalf("logits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStopMatcher(t *testing.T) {
	tests := []struct {
		name    string
		stops   []string
		pieces  []string
		emitted string
		stopped bool
	}{
		{"no stops passes through", nil, []string{"a", "b"}, "ab", false},
		{"stop inside one piece", []string{"END"}, []string{"helloENDworld"}, "hello", true},
		{"stop split across pieces", []string{"END"}, []string{"hel", "lo E", "N", "D!"}, "hello ", true},
		{"false start is released", []string{"END"}, []string{"EN", "x", "y"}, "ENxy", false},
		{"earliest of several stops", []string{"bb", "a"}, []string{"xxbba"}, "xx", true},
		{"unicode stop", []string{"日本"}, []string{"今日", "は日", "本"}, "今日は", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewStopMatcher(tt.stops)
			var out strings.Builder
			stopped := false
			for _, p := range tt.pieces {
				emit, s := m.Push(p)
				out.WriteString(emit)
				if s {
					stopped = true
					break
				}
			}
			if !stopped {
				out.WriteString(m.Flush())
			}
			if out.String() != tt.emitted || stopped != tt.stopped {
				t.Fatalf("emitted %q stopped=%v, want %q stopped=%v", out.String(), stopped, tt.emitted, tt.stopped)
			}
		})
	}
}

func TestCheckToken(t *testing.T) {
	isEOG := func(id int32) bool { return id == 2 }
	p := DefaultParams()
	p.MaxTokens, p.StopTokenIDs = 3, []int32{9}
	tests := []struct {
		token     int32
		generated int
		ignoreEOS bool
		want      FinishReason
	}{
		{5, 1, false, FinishNone},
		{2, 1, false, FinishStop},
		{2, 1, true, FinishNone},
		{9, 1, false, FinishStop},
		{5, 3, false, FinishLength},
	}
	for _, tt := range tests {
		q := p
		q.IgnoreEOS = tt.ignoreEOS
		if got := q.CheckToken(tt.token, tt.generated, isEOG); got != tt.want {
			t.Errorf("CheckToken(%d, %d, ignoreEOS=%v) = %q, want %q", tt.token, tt.generated, tt.ignoreEOS, got, tt.want)
		}
	}
}

// BenchmarkSampleTopP draws from a Zipf-shaped distribution over a 49,152
// token vocabulary (the shape of real next-token distributions) and from a
// nearly flat one (the worst case for nucleus sampling).
func BenchmarkSampleTopP(b *testing.B) {
	shapes := map[string]func(i int) float32{
		"zipf": func(i int) float32 { return float32(-1.2 * math.Log(float64((i*7919)%49152+1))) },
		"flat": func(i int) float32 { return float32(math.Sin(float64(i)*0.37)) * 8 },
	}
	for name, f := range shapes {
		b.Run(name, func(b *testing.B) {
			p := DefaultParams()
			p.Temperature, p.TopP, p.HasSeed = 0.8, 0.95, true
			logits := make([]float32, 49152)
			for i := range logits {
				logits[i] = f(i)
			}
			s := New(p)
			buf := make([]float32, len(logits))
			for b.Loop() {
				copy(buf, logits)
				s.Sample(buf)
			}
		})
	}
}
