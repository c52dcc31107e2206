package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// engineReport is the JSON printed by `tandem bench engine`.
type engineReport struct {
	Model             string    `json:"model"`
	Backend           string    `json:"backend"`
	Threads           int       `json:"threads"`
	LoadSeconds       float64   `json:"load_seconds"`
	RSSBytes          int64     `json:"rss_bytes"`
	FileBytes         int64     `json:"file_bytes"`
	PromptTokens      int       `json:"prompt_tokens"`
	PrefillTokensPerS float64   `json:"prefill_tokens_per_s"`
	DecodeTokens      int       `json:"decode_tokens"`
	DecodeTokensPerS  float64   `json:"decode_tokens_per_s"`
	Runs              int       `json:"runs"`
	PrefillRunsPerS   []float64 `json:"prefill_runs_tokens_per_s"`
	DecodeRunsPerS    []float64 `json:"decode_runs_tokens_per_s"`

	Batch       []engine.BatchResult `json:"batch,omitempty"`
	PrefixCache *engine.PrefixResult `json:"prefix_cache,omitempty"`
}

func runBenchEngine(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench engine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var mf modelFlags
	mf.register(fs)
	promptLen := fs.Int("prompt-tokens", 512, "prompt length for the prefill measurement")
	decodeLen := fs.Int("decode-tokens", 128, "tokens generated for the decode measurement")
	runs := fs.Int("runs", 5, "repetitions; medians are reported")
	asJSON := fs.Bool("json", false, "print JSON")
	concurrency := fs.String("concurrency", "1,4,16,32", "comma-separated numbers of sequences decoded together (empty skips the batch and prefix-cache runs)")
	ttftTokens := fs.Int("ttft-prompt-tokens", 1000, "prompt length of the prefix-cache time-to-first-token measurement")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measurement to this file")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *promptLen <= 0 || *decodeLen <= 0 || *runs <= 0 {
		return fmt.Errorf("bench engine: --prompt-tokens, --decode-tokens and --runs must be positive")
	}
	kvDType, err := kernels.ParseKVDType(mf.kvDType)
	if err != nil {
		return err
	}
	m, backendName, closeAll, err := mf.open()
	if err != nil {
		return err
	}
	defer closeAll()
	rep := engineReport{Model: m.ID, Backend: backendName, Threads: mf.threads, LoadSeconds: m.LoadTime.Seconds(),
		PromptTokens: *promptLen, DecodeTokens: *decodeLen, Runs: *runs}
	if fi, err := os.Stat(m.Path); err == nil {
		rep.FileBytes = fi.Size()
	}
	prompt := benchPrompt(m, *promptLen)
	p := sample.DefaultParams()
	p.MaxTokens, p.IgnoreEOS = *decodeLen, true
	for i := 0; i < *runs; i++ {
		// Prefill: the whole prompt, one token generated.
		pp := p
		pp.MaxTokens = 1
		st, err := generateOne(ctx, m, prompt, pp, kvDType, func(string) {})
		if err != nil {
			return err
		}
		rep.PrefillRunsPerS = append(rep.PrefillRunsPerS, rate(st.promptTokens, st.prefill))
		// Decode: a short prompt, then decodeLen tokens at batch 1.
		st, err = generateOne(ctx, m, prompt[:16], p, kvDType, func(string) {})
		if err != nil {
			return err
		}
		rep.DecodeRunsPerS = append(rep.DecodeRunsPerS, rate(st.generated-1, st.decode))
	}
	rep.PrefillTokensPerS = median(rep.PrefillRunsPerS)
	rep.DecodeTokensPerS = median(rep.DecodeRunsPerS)
	if *concurrency != "" {
		opts := engine.DefaultBenchOptions()
		opts.ModelID, opts.KVDType, opts.Runs, opts.TTFTPromptTokens = m.ID, kvDType, *runs, *ttftTokens
		opts.Text = benchPrompt(m, 256)
		opts.Concurrency = nil
		for _, f := range strings.Split(*concurrency, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return fmt.Errorf("bench engine: --concurrency: %q is not a positive number", f)
			}
			opts.Concurrency = append(opts.Concurrency, n)
		}
		br, err := engine.RunEngineBench(ctx, m, opts)
		if err != nil {
			return err
		}
		rep.Batch, rep.PrefixCache = br.Batch, &br.PrefixCache
	}
	rep.RSSBytes = residentBytes()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(stdout, "model %s on %s: load %.3fs, RSS %.1f MiB (file %.1f MiB)\nprefill %d tokens: %.1f tokens/s\ndecode %d tokens: %.1f tokens/s\n",
		rep.Model, rep.Backend, rep.LoadSeconds, float64(rep.RSSBytes)/(1<<20), float64(rep.FileBytes)/(1<<20),
		rep.PromptTokens, rep.PrefillTokensPerS, rep.DecodeTokens, rep.DecodeTokensPerS)
	for _, b := range rep.Batch {
		fmt.Fprintf(stdout, "decode with %2d sequences: %.1f tokens/s\n", b.Seqs, b.DecodeTokensPerS)
	}
	if pc := rep.PrefixCache; pc != nil {
		fmt.Fprintf(stdout, "time to first token, %d-token prompt: cold %.1f ms, cached %.1f ms (%.1fx)\n", pc.PromptTokens, pc.ColdTTFTMs, pc.CachedTTFTMs, pc.Speedup)
	}
	return nil
}

// benchPrompt tokenizes ordinary prose and repeats it to n tokens, so the
// measurement runs on realistic token ids.
func benchPrompt(m *model.Model, n int) []int32 {
	const text = "The history of computing is a story of layers: each generation of engineers builds abstractions " +
		"on the work of the previous one, and the machines underneath grow faster while the ideas on top grow richer. "
	base := m.Tokenizer.Encode(text, tokenizer.EncodeOptions{})
	out := make([]int32, 0, n)
	for len(out) < n {
		out = append(out, base[:min(len(base), n-len(out))]...)
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// residentBytes reads VmRSS from /proc/self/status (0 where unavailable).
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "VmRSS:" {
			kb, _ := strconv.ParseInt(string(f[1]), 10, 64)
			return kb << 10
		}
	}
	return 0
}
