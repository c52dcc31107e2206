package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseLengthDist(t *testing.T) {
	cases := []struct {
		in      string
		want    lengthDist
		wantErr bool
	}{
		{"fixed:512", lengthDist{512, 512}, false},
		{"uniform:10,20", lengthDist{10, 20}, false},
		{"fixed:0", lengthDist{}, true},
		{"uniform:20,10", lengthDist{}, true},
		{"uniform:5", lengthDist{}, true},
		{"normal:5,1", lengthDist{}, true},
		{"", lengthDist{}, true},
	}
	for _, tc := range cases {
		got, err := parseLengthDist(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%q: got %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPercentiles(t *testing.T) {
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(100 - i) // 100..1, unsorted
	}
	want := map[string]float64{"p50": 50, "p95": 95, "p99": 99, "mean": 50.5}
	if diff := cmp.Diff(want, percentiles(v)); diff != "" {
		t.Errorf("percentiles (-want +got):\n%s", diff)
	}
	if got := percentiles(nil); got["p99"] != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestMakePlan(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace.jsonl")
	os.WriteFile(trace, []byte("{\"prompt_tokens\": 3, \"output_tokens\": 2}\n\n{\"prompt_tokens\": 5, \"output_tokens\": 1}\n"), 0o600)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"prompt_tokens\": 0, \"output_tokens\": 2}\n"), 0o600)
	cases := []struct {
		name        string
		trace       string
		prompt, out string
		rate        float64
		wantLens    [][2]int
		wantOffsets bool
		wantErr     bool
	}{
		{name: "fixed closed loop", prompt: "fixed:4", out: "fixed:2", wantLens: [][2]int{{4, 2}, {4, 2}, {4, 2}}},
		{name: "trace repeats", trace: trace, prompt: "x", out: "x", wantLens: [][2]int{{3, 2}, {5, 1}, {3, 2}}},
		{name: "poisson", prompt: "fixed:1", out: "fixed:1", rate: 5, wantLens: [][2]int{{1, 1}, {1, 1}, {1, 1}}, wantOffsets: true},
		{name: "bad trace", trace: bad, wantErr: true},
		{name: "bad distribution", prompt: "fixed:-1", out: "fixed:1", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := makePlan(rand.New(rand.NewPCG(1, 2)), 3, tc.trace, tc.prompt, tc.out, tc.rate)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			var lens [][2]int
			for _, r := range plan.reqs {
				lens = append(lens, [2]int{len(r.prompt), r.maxTokens})
			}
			if diff := cmp.Diff(tc.wantLens, lens); diff != "" {
				t.Errorf("lengths (-want +got):\n%s", diff)
			}
			if (plan.offsets != nil) != tc.wantOffsets {
				t.Fatalf("offsets %v, want present %v", plan.offsets, tc.wantOffsets)
			}
			for i := 1; i < len(plan.offsets); i++ {
				if plan.offsets[i] < plan.offsets[i-1] {
					t.Errorf("arrivals out of order: %v", plan.offsets)
				}
			}
		})
	}
}

func TestSummarizeGoodput(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	plan := benchPlan{reqs: []benchRequest{{prompt: make([]int32, 4)}, {prompt: make([]int32, 4)}, {prompt: make([]int32, 4)}}}
	results := []benchResult{
		{start: t0, tokens: at(100, 150, 200), output: 3}, // meets both SLOs
		{start: t0, tokens: at(2000, 2050), output: 2},    // TTFT too slow
		{start: t0, err: os.ErrDeadlineExceeded},          // failed
	}
	rep := summarize(results, plan, 2*time.Second, time.Second, 100*time.Millisecond)
	if rep.Failed != 1 || rep.FirstError == "" {
		t.Errorf("failed %d (%q)", rep.Failed, rep.FirstError)
	}
	if rep.GoodputPerS != 0.5 || rep.RequestsPerS != 1 || rep.OutputTokensPS != 2.5 {
		t.Errorf("goodput %v, rps %v, tokens/s %v", rep.GoodputPerS, rep.RequestsPerS, rep.OutputTokensPS)
	}
	if rep.TTFTMS["p50"] != 100 || rep.ITLMS["p99"] != 50 {
		t.Errorf("ttft %v itl %v", rep.TTFTMS, rep.ITLMS)
	}
}
