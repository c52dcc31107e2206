package placement

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func cand(id string, role Role, l Load, hashes ...uint64) Candidate {
	return Candidate{ID: id, Role: role, GRPCAddr: id + ":1", Load: l, Prefix: NewHashSet(hashes)}
}

func mustDefault(t testing.TB) *Pipeline {
	t.Helper()
	p, err := NewRegistry().Build(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlace(t *testing.T) {
	idle := Load{FreeKVBlocks: 100, TotalKVBlocks: 100, BlockTokens: 16}
	busy := Load{QueueDepth: 8, Running: 8, FreeKVBlocks: 100, TotalKVBlocks: 100, BlockTokens: 16}
	full := Load{FreeKVBlocks: 2, TotalKVBlocks: 100, BlockTokens: 16}
	long := Request{Model: "m", PromptTokens: 1024, BlockTokens: 16, MaxTokens: 64, BlockHashes: []uint64{1, 2, 3, 4}}
	tests := []struct {
		name        string
		req         Request
		prefill     []Candidate
		decode      []Candidate
		wantPrefill string // "" means colocated
		wantDecode  string
		wantErr     error
	}{
		{
			name:        "load-aware picks idle workers",
			req:         long,
			prefill:     []Candidate{cand("p-busy", RolePrefill, busy), cand("p-idle", RolePrefill, idle)},
			decode:      []Candidate{cand("d-busy", RoleDecode, busy), cand("d-idle", RoleDecode, idle)},
			wantPrefill: "p-idle", wantDecode: "d-idle",
		},
		{
			name:        "prefix-aware beats slight load difference",
			req:         long,
			prefill:     []Candidate{cand("p-idle", RolePrefill, idle), cand("p-warm", RolePrefill, Load{QueueDepth: 1}, 1, 2, 3, 4)},
			decode:      []Candidate{cand("d1", RoleDecode, idle)},
			wantPrefill: "p-warm", wantDecode: "d1",
		},
		{
			name:        "kv-capacity filter skips full decode",
			req:         long,
			prefill:     []Candidate{cand("p1", RolePrefill, idle)},
			decode:      []Candidate{cand("d-full", RoleDecode, full), cand("d-busy", RoleDecode, busy)},
			wantPrefill: "p1", wantDecode: "d-busy",
		},
		{
			name:       "short prompt is prefilled on decode",
			req:        Request{Model: "m", PromptTokens: 40, BlockTokens: 16, BlockHashes: []uint64{9, 10}},
			prefill:    []Candidate{cand("p1", RolePrefill, idle)},
			decode:     []Candidate{cand("d1", RoleDecode, idle)},
			wantDecode: "d1",
		},
		{
			name:        "cached prefix on decode makes the rest short",
			req:         long,
			prefill:     []Candidate{cand("p1", RolePrefill, idle)},
			decode:      []Candidate{cand("d1", RoleDecode, idle, 1, 2, 3, 4)},
			wantDecode:  "d1", // 1024-4*16 = 960 uncached: still remote
			wantPrefill: "p1",
		},
		{
			name:       "no prefill workers falls back to colocated",
			req:        long,
			decode:     []Candidate{cand("d1", RoleDecode, idle)},
			wantDecode: "d1",
		},
		{
			name:    "no decode capacity",
			req:     long,
			prefill: []Candidate{cand("p1", RolePrefill, idle)},
			decode:  []Candidate{cand("d-full", RoleDecode, full)},
			wantErr: ErrNoCapacity,
		},
		{
			name:    "invalid request",
			req:     Request{Model: "m"},
			decode:  []Candidate{cand("d1", RoleDecode, idle)},
			wantErr: ErrInvalidRequest,
		},
	}
	p := mustDefault(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := p.Place(&tt.req, tt.prefill, tt.decode)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			gotPrefill := ""
			if res.Prefill != nil {
				gotPrefill = res.Prefill.ID
			}
			if d := cmp.Diff([2]string{tt.wantPrefill, tt.wantDecode}, [2]string{gotPrefill, res.Decode.ID}); d != "" {
				t.Errorf("placement [prefill decode] (-want +got):\n%s", d)
			}
		})
	}
}

func TestTiesSpreadAcrossEqualWorkers(t *testing.T) {
	p := mustDefault(t)
	seen := map[string]int{}
	for h := uint64(1); h <= 64; h++ {
		decode := []Candidate{cand("a", RoleDecode, Load{}), cand("b", RoleDecode, Load{}), cand("c", RoleDecode, Load{})}
		r := Request{Model: "m", PromptTokens: 16, BlockTokens: 16, BlockHashes: []uint64{h * 7919}}
		res, err := p.Place(&r, nil, decode)
		if err != nil {
			t.Fatal(err)
		}
		seen[res.Decode.ID]++
	}
	if len(seen) != 3 {
		t.Fatalf("ties went to %v, want all three workers used", seen)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		spec string
	}{
		{"unknown scorer", `{"prefill":{"scorers":[{"name":"vibes"}],"picker":{"name":"max-score"}},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`},
		{"missing picker", `{"prefill":{},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`},
		{"unknown decider", `{"prefill":{"picker":{"name":"max-score"}},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"coin"}}`},
		{"bad param", `{"prefill":{"picker":{"name":"max-score"}},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"uncached-threshold","params":{"min_uncached_tokens":-1}}}`},
		{"priority limit below normal", `{"prefill":{"picker":{"name":"max-score"}},"decode":{"filters":[{"name":"queue-limit","params":{"max_queue":4,"priority_max_queue":2}}],"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`},
		{"typo param", `{"prefill":{"picker":{"name":"max-score"}},"decode":{"filters":[{"name":"queue-limit","params":{"maxqueue":3}}],"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`},
		{"negative weight", `{"prefill":{"scorers":[{"name":"load","weight":-1}],"picker":{"name":"max-score"}},"decode":{"picker":{"name":"max-score"}},"decider":{"name":"never-remote"}}`},
		{"unknown field", `{"prefil":{}}`},
		{"trailing", `{} {}`},
	}
	r := NewRegistry()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSpec([]byte(tt.spec))
			if err == nil {
				_, err = r.Build(s)
			}
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

func TestDefaultSpecRoundTrip(t *testing.T) {
	b, err := json.Marshal(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(DefaultSpec(), s); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestQueueLimit(t *testing.T) {
	spec := DefaultSpec()
	spec.Decode.Filters = append(spec.Decode.Filters, PluginSpec{Name: "queue-limit", Params: json.RawMessage(`{"max_queue":2,"priority_max_queue":4}`)})
	p, err := NewRegistry().Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		queue    int
		priority int
		want     error
	}{
		{"below limit", 1, 0, nil},
		{"at limit", 2, 0, ErrNoCapacity},
		{"priority above normal limit", 3, 1, nil},
		{"priority at its limit", 4, 1, ErrNoCapacity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Request{Model: "m", PromptTokens: 10, Priority: tt.priority}
			_, err := p.Place(&r, nil, []Candidate{cand("d", RoleDecode, Load{QueueDepth: tt.queue})})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	b, _ := json.Marshal(DefaultSpec())
	f.Add(b)
	f.Add([]byte(`{"decider":{"name":"never-remote"}}`))
	r := NewRegistry()
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		p, err := r.Build(s)
		if err != nil {
			return
		}
		req := Request{Model: "m", PromptTokens: 100, BlockTokens: 16, BlockHashes: []uint64{1}}
		_, _ = p.Place(&req, []Candidate{cand("p", RolePrefill, Load{})}, []Candidate{cand("d", RoleDecode, Load{})})
	})
}

func BenchmarkPlace(b *testing.B) {
	p := mustDefault(b)
	var pre, dec []Candidate
	for i := range 32 {
		l := Load{QueueDepth: i % 5, Running: i % 7, FreeKVBlocks: 1000 - i, TotalKVBlocks: 1000, BlockTokens: 16}
		pre = append(pre, cand("p"+string(rune('a'+i%26))+string(rune('0'+i/26)), RolePrefill, l, uint64(i), uint64(i+1)))
		dec = append(dec, cand("d"+string(rune('a'+i%26))+string(rune('0'+i/26)), RoleDecode, l))
	}
	r := Request{Model: "m", PromptTokens: 2048, MaxTokens: 256, BlockTokens: 16, BlockHashes: make([]uint64, 128)}
	pb, db := make([]Candidate, len(pre)), make([]Candidate, len(dec))
	b.ReportAllocs()
	for b.Loop() {
		copy(pb, pre)
		copy(db, dec)
		if _, err := p.Place(&r, pb, db); err != nil {
			b.Fatal(err)
		}
	}
}
