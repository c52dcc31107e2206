package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// lengthDist draws prompt or output lengths: fixed:N or uniform:A,B.
type lengthDist struct {
	lo, hi int
}

func parseLengthDist(s string) (lengthDist, error) {
	kind, arg, _ := strings.Cut(s, ":")
	switch kind {
	case "fixed":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 {
			return lengthDist{}, fmt.Errorf("bench serve: %q: want fixed:N with N >= 1", s)
		}
		return lengthDist{n, n}, nil
	case "uniform":
		a, b, ok := strings.Cut(arg, ",")
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || lo < 1 || hi < lo {
			return lengthDist{}, fmt.Errorf("bench serve: %q: want uniform:A,B with 1 <= A <= B", s)
		}
		return lengthDist{lo, hi}, nil
	}
	return lengthDist{}, fmt.Errorf("bench serve: length distribution %q: want fixed:N or uniform:A,B", s)
}

func (d lengthDist) draw(rng *rand.Rand) int { return d.lo + rng.IntN(d.hi-d.lo+1) }

// traceEntry is one line of a JSONL trace.
type traceEntry struct {
	PromptTokens int `json:"prompt_tokens"`
	OutputTokens int `json:"output_tokens"`
}

func readTrace(path string) ([]traceEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench serve: %w", err)
	}
	defer f.Close()
	var out []traceEntry
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var e traceEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("bench serve: %s:%d: %w", path, line, err)
		}
		if e.PromptTokens < 1 || e.OutputTokens < 1 {
			return nil, fmt.Errorf("bench serve: %s:%d: prompt_tokens and output_tokens must be positive", path, line)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// benchPlan is the requests of a run with their arrival offsets.
type benchPlan struct {
	reqs    []benchRequest
	offsets []time.Duration // nil: closed loop at fixed concurrency
}

// serveReport is the JSON printed by `tandem bench serve`.
type serveReport struct {
	Target          string             `json:"target"`
	Protocol        string             `json:"protocol"`
	Mode            string             `json:"load"` // poisson:R or concurrency:C or trace
	Requests        int                `json:"requests"`
	Failed          int                `json:"failed"`
	FirstError      string             `json:"first_error,omitempty"`
	DurationS       float64            `json:"duration_s"`
	RequestsPerS    float64            `json:"requests_per_s"`
	OutputTokensPS  float64            `json:"output_tokens_per_s"`
	GoodputPerS     float64            `json:"goodput_requests_per_s"`
	SLOTTFTMS       float64            `json:"slo_ttft_ms"`
	SLOITLMS        float64            `json:"slo_itl_ms"`
	TTFTMS          map[string]float64 `json:"ttft_ms"`
	ITLMS           map[string]float64 `json:"itl_ms"`
	E2EMS           map[string]float64 `json:"e2e_ms"`
	MeanPromptLen   float64            `json:"mean_prompt_tokens"`
	MeanOutputLen   float64            `json:"mean_output_tokens"`
	WarmupRequests  int                `json:"warmup_requests"`
	ConcurrencyPeak int                `json:"concurrency_peak"`
}

func runBenchServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "gateway HTTP base URL (OpenAI API)")
	grpcAddr := fs.String("grpc", "", "gateway gRPC address; when set, load goes over gRPC instead of HTTP")
	model := fs.String("model-name", "", "model name to request (default: the gateway's first model)")
	rate := fs.Float64("rate", 0, "Poisson arrival rate in requests/s (0 = closed loop at --concurrency)")
	conc := fs.Int("concurrency", 1, "requests in flight in closed-loop mode")
	n := fs.Int("requests", 32, "measured requests")
	warm := fs.Int("warmup", 2, "warm-up requests sent first and not measured")
	promptDist := fs.String("prompt-len", "fixed:128", "prompt length: fixed:N or uniform:A,B (tokens)")
	outputDist := fs.String("output-len", "fixed:64", "output length: fixed:N or uniform:A,B (tokens)")
	trace := fs.String("trace", "", "JSONL trace of {\"prompt_tokens\": N, \"output_tokens\": M} lines replacing the length distributions")
	seed := fs.Uint64("seed", 1, "random seed for lengths, prompts and arrivals")
	sloTTFT := fs.Duration("slo-ttft", time.Second, "time-to-first-token SLO for goodput")
	sloITL := fs.Duration("slo-itl", 100*time.Millisecond, "mean inter-token latency SLO for goodput")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *n < 1 || *warm < 0 || *conc < 1 || *rate < 0 {
		return fmt.Errorf("bench serve: --requests, --concurrency must be positive; --warmup and --rate not negative")
	}
	key := os.Getenv("TANDEM_API_KEY")
	if *model == "" {
		m, err := firstModel(ctx, *url, key)
		if err != nil {
			return err
		}
		*model = m
	}
	rng := rand.New(rand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15))
	plan, err := makePlan(rng, *n+*warm, *trace, *promptDist, *outputDist, *rate)
	if err != nil {
		return err
	}
	var client benchClient
	target, proto := *url, "http"
	if *grpcAddr != "" {
		gc, err := newGRPCBench(*grpcAddr, *model, key)
		if err != nil {
			return err
		}
		client, target, proto = gc, *grpcAddr, "grpc"
	} else {
		client = &httpBench{url: strings.TrimSuffix(*url, "/"), model: *model, key: key, hc: &http.Client{}}
	}
	defer client.close()

	// Warm-up: sequential, unmeasured.
	for i := range *warm {
		if r := client.do(ctx, plan.reqs[i]); r.err != nil {
			return fmt.Errorf("bench serve: warm-up: %w", r.err)
		}
	}
	measured := benchPlan{reqs: plan.reqs[*warm:]}
	if plan.offsets != nil {
		base := plan.offsets[*warm]
		for _, o := range plan.offsets[*warm:] {
			measured.offsets = append(measured.offsets, o-base)
		}
	}
	results, dur, peak := execute(ctx, client, measured, *conc)
	rep := summarize(results, measured, dur, *sloTTFT, *sloITL)
	rep.Target, rep.Protocol, rep.WarmupRequests, rep.ConcurrencyPeak = target, proto, *warm, peak
	switch {
	case *trace != "":
		rep.Mode = "trace:" + *trace
	case *rate > 0:
		rep.Mode = fmt.Sprintf("poisson:%g", *rate)
	default:
		rep.Mode = fmt.Sprintf("concurrency:%d", *conc)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "target %s (%s), load %s, %d requests (%d failed) in %.1fs\n", rep.Target, rep.Protocol, rep.Mode, rep.Requests, rep.Failed, rep.DurationS)
	fmt.Fprintf(stdout, "throughput %.2f req/s, %.1f output tokens/s; goodput %.2f req/s (TTFT <= %v, mean ITL <= %v)\n",
		rep.RequestsPerS, rep.OutputTokensPS, rep.GoodputPerS, *sloTTFT, *sloITL)
	for _, row := range []struct {
		name string
		m    map[string]float64
	}{{"TTFT", rep.TTFTMS}, {"ITL", rep.ITLMS}, {"E2E", rep.E2EMS}} {
		fmt.Fprintf(stdout, "%-5s p50 %8.1f ms  p95 %8.1f ms  p99 %8.1f ms\n", row.name, row.m["p50"], row.m["p95"], row.m["p99"])
	}
	if rep.FirstError != "" {
		fmt.Fprintln(stdout, "first error:", rep.FirstError)
	}
	return nil
}

// firstModel asks the gateway for its model list.
func firstModel(ctx context.Context, url, key string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimSuffix(url, "/")+"/v1/models", nil)
	if err != nil {
		return "", err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("bench serve: list models: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Data) == 0 {
		return "", fmt.Errorf("bench serve: list models: status %d, %v", resp.StatusCode, err)
	}
	return out.Data[0].ID, nil
}

// makePlan draws total requests. Prompts are random token ids so requests
// share no prefix (the prefix cache does not flatter the figures).
func makePlan(rng *rand.Rand, total int, trace, promptDist, outputDist string, rate float64) (benchPlan, error) {
	var plan benchPlan
	var entries []traceEntry
	if trace != "" {
		var err error
		if entries, err = readTrace(trace); err != nil {
			return plan, err
		}
		if len(entries) == 0 {
			return plan, errors.New("bench serve: empty trace")
		}
	}
	pd, err := parseLengthDist(promptDist)
	if err != nil && trace == "" {
		return plan, err
	}
	od, err := parseLengthDist(outputDist)
	if err != nil && trace == "" {
		return plan, err
	}
	var at time.Duration
	for i := range total {
		var p, o int
		if entries != nil {
			// The trace repeats when the run is longer than it.
			e := entries[i%len(entries)]
			p, o = e.PromptTokens, e.OutputTokens
		} else {
			p, o = pd.draw(rng), od.draw(rng)
		}
		prompt := make([]int32, p)
		for j := range prompt {
			prompt[j] = int32(100 + rng.IntN(10000))
		}
		plan.reqs = append(plan.reqs, benchRequest{prompt: prompt, maxTokens: o})
		if rate > 0 {
			// Poisson arrivals: exponential gaps with mean 1/rate.
			plan.offsets = append(plan.offsets, at)
			at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		}
	}
	return plan, nil
}

// execute runs the plan: open loop at the planned arrival offsets, or a
// closed loop of conc workers. It returns results in plan order.
func execute(ctx context.Context, c benchClient, plan benchPlan, conc int) ([]benchResult, time.Duration, int) {
	results := make([]benchResult, len(plan.reqs))
	var mu sync.Mutex
	inFlight, peak := 0, 0
	run := func(i int) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		results[i] = c.do(ctx, plan.reqs[i])
		mu.Lock()
		inFlight--
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	if plan.offsets != nil {
		for i, off := range plan.offsets {
			if d := time.Until(start.Add(off)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			if ctx.Err() != nil {
				results[i].err = ctx.Err()
				continue
			}
			wg.Go(func() { run(i) })
		}
	} else {
		next := make(chan int)
		for range conc {
			wg.Go(func() {
				for i := range next {
					run(i)
				}
			})
		}
		for i := range plan.reqs {
			select {
			case next <- i:
			case <-ctx.Done():
				results[i].err = ctx.Err()
			}
		}
		close(next)
	}
	wg.Wait()
	return results, time.Since(start), peak
}

// summarize computes latency percentiles, throughput and goodput.
func summarize(results []benchResult, plan benchPlan, dur time.Duration, sloTTFT, sloITL time.Duration) serveReport {
	rep := serveReport{Requests: len(results), DurationS: dur.Seconds(), SLOTTFTMS: ms(sloTTFT), SLOITLMS: ms(sloITL)}
	var ttft, itl, e2e []float64
	outTokens, good, promptSum := 0, 0, 0
	for i, r := range results {
		promptSum += len(plan.reqs[i].prompt)
		if r.err != nil || len(r.tokens) == 0 {
			rep.Failed++
			if rep.FirstError == "" {
				if r.err == nil {
					r.err = errors.New("no tokens")
				}
				rep.FirstError = r.err.Error()
			}
			continue
		}
		first := r.tokens[0].Sub(r.start)
		ttft = append(ttft, ms(first))
		e2e = append(e2e, ms(r.tokens[len(r.tokens)-1].Sub(r.start)))
		var gaps time.Duration
		for j := 1; j < len(r.tokens); j++ {
			g := r.tokens[j].Sub(r.tokens[j-1])
			itl = append(itl, ms(g))
			gaps += g
		}
		meanITL := time.Duration(0)
		if len(r.tokens) > 1 {
			meanITL = gaps / time.Duration(len(r.tokens)-1)
		}
		if first <= sloTTFT && meanITL <= sloITL {
			good++
		}
		out := r.output
		if out == 0 {
			out = len(r.tokens)
		}
		outTokens += out
	}
	ok := rep.Requests - rep.Failed
	if dur > 0 {
		rep.RequestsPerS = float64(ok) / dur.Seconds()
		rep.OutputTokensPS = float64(outTokens) / dur.Seconds()
		rep.GoodputPerS = float64(good) / dur.Seconds()
	}
	if ok > 0 {
		rep.MeanOutputLen = float64(outTokens) / float64(ok)
	}
	rep.MeanPromptLen = float64(promptSum) / float64(max(1, rep.Requests))
	rep.TTFTMS, rep.ITLMS, rep.E2EMS = percentiles(ttft), percentiles(itl), percentiles(e2e)
	return rep
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentiles returns p50, p95, p99 and the mean (nearest-rank).
func percentiles(v []float64) map[string]float64 {
	out := map[string]float64{"p50": 0, "p95": 0, "p99": 0, "mean": 0}
	if len(v) == 0 {
		return out
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	out["p50"], out["p95"], out["p99"], out["mean"] = at(0.50), at(0.95), at(0.99), sum/float64(len(s))
	return out
}
