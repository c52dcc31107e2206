package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/backends"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// modelFlags are the flags every command that runs a model shares.
type modelFlags struct {
	path    string
	backend string
	threads int
	kvDType string
	act     string
	tp      int
}

func (f *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "model", model.DefaultPath(), "GGUF model file")
	fs.StringVar(&f.backend, "backend", "cpu", fmt.Sprintf("compute backend %v", backends.Names()))
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = one per core)")
	fs.StringVar(&f.kvDType, "kv-dtype", "f16", "KV cache element type: f16 or int8")
	fs.IntVar(&f.tp, "tp", 1, "tensor-parallel ranks (CPU: threads are shared between them; CUDA: one GPU each)")
	fs.StringVar(&f.act, "activations", "f32", "activation precision of quantized matrix products: f32 (accurate) or q8 (llama.cpp-compatible, faster prefill)")
}

// open loads the model; the returned function releases it and its backends.
func (f *modelFlags) open() (*model.Model, string, func(), error) {
	act, err := kernels.ParseActivations(f.act)
	if err != nil {
		return nil, "", nil, err
	}
	return loadModel(f.path, f.backend, backends.Options{Threads: f.threads, Activations: act}, f.tp)
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var mf modelFlags
	mf.register(fs)
	prompt := fs.String("prompt", "", "prompt text (required)")
	chat := fs.Bool("chat", false, "wrap the prompt as a user message in the model's chat template")
	system := fs.String("system", "", "system message (with --chat)")
	p := sample.DefaultParams()
	fs.IntVar(&p.MaxTokens, "max-tokens", 256, "maximum tokens to generate")
	temp := fs.Float64("temperature", 0, "sampling temperature (0 = greedy)")
	topK := fs.Int("top-k", 0, "top-k filter (0 = off)")
	topP := fs.Float64("top-p", 1, "nucleus filter (1 = off)")
	minP := fs.Float64("min-p", 0, "min-p filter (0 = off)")
	seed := fs.Int64("seed", -1, "sampling seed (-1 = random)")
	repeat := fs.Float64("repetition-penalty", 1, "repetition penalty over the last 64 tokens (1 = off)")
	var stops stringList
	fs.Var(&stops, "stop", "stop string (repeatable)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *prompt == "" {
		fmt.Fprintln(stderr, "tandem generate: --prompt is required")
		return errUsage
	}
	p.Temperature, p.TopK, p.TopP, p.MinP = float32(*temp), *topK, float32(*topP), float32(*minP)
	p.RepetitionPenalty, p.Stop = float32(*repeat), stops
	if *seed >= 0 {
		p.Seed, p.HasSeed = uint64(*seed), true
	}
	kvDType, err := kernels.ParseKVDType(mf.kvDType)
	if err != nil {
		return err
	}

	m, _, closeAll, err := mf.open()
	if err != nil {
		return err
	}
	defer closeAll()
	if err := p.Validate(m.Config().Vocab); err != nil {
		return err
	}
	ids, err := promptTokens(m.Tokenizer, *prompt, *system, *chat)
	if err != nil {
		return err
	}
	st, err := generateOne(ctx, m, ids, p, kvDType, func(s string) { io.WriteString(stdout, s) })
	fmt.Fprintln(stdout)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "prefill: %d tokens in %v (%.1f tokens/s); decode: %d tokens in %v (%.1f tokens/s); finish: %s\n",
		st.promptTokens, st.prefill.Round(time.Millisecond), rate(st.promptTokens, st.prefill),
		st.generated, st.decode.Round(time.Millisecond), rate(st.generated-1, st.decode), st.finish)
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 || n <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// promptTokens renders and tokenizes a prompt. Chat prompts go through the
// model's template, whose own control tokens are the only ones produced;
// plain prompts get the model's BOS token when its metadata asks for one.
func promptTokens(tok *tokenizer.Tokenizer, prompt, system string, chat bool) ([]int32, error) {
	if !chat {
		return tok.Encode(prompt, tokenizer.EncodeOptions{AddBOS: tok.AddBOS()}), nil
	}
	var msgs []tokenizer.Message
	if system != "" {
		msgs = append(msgs, tokenizer.Message{Role: "system", Content: system})
	}
	msgs = append(msgs, tokenizer.Message{Role: "user", Content: prompt})
	return tok.EncodeChat(msgs, true)
}

type genStats struct {
	promptTokens, generated int
	prefill, decode         time.Duration
	finish                  sample.FinishReason
}

// generateOne runs one request through a private engine (the same paged KV
// cache, scheduler and batched forward pass the workers use) and streams its
// text through emit. Stop strings are matched on the decoded text.
func generateOne(ctx context.Context, m *model.Model, ids []int32, p sample.Params, kvDType kernels.KVDType, emit func(string)) (genStats, error) {
	cfg := m.Config()
	st := genStats{promptTokens: len(ids)}
	if len(ids) == 0 {
		return st, errors.New("generate: empty prompt")
	}
	total := len(ids) + p.MaxTokens
	if total > cfg.ContextLength {
		return st, fmt.Errorf("generate: prompt of %d tokens plus %d new tokens exceeds the context of %d", len(ids), p.MaxTokens, cfg.ContextLength)
	}
	ecfg := engine.DefaultConfig()
	ecfg.ModelID, ecfg.Vocab, ecfg.IsEOG = m.ID, cfg.Vocab, m.Tokenizer.IsEOG
	const blockSize = 16
	cache, err := m.NewKVCache((total+blockSize-1)/blockSize+1, blockSize, kvDType)
	if err != nil {
		return st, err
	}
	defer cache.Close()
	eng, err := engine.New(ecfg, m, cache)
	if err != nil {
		return st, err
	}
	if err := eng.Start(); err != nil {
		return st, err
	}
	defer eng.Close()
	h, err := eng.Add(ctx, engine.Request{Tokens: ids, Params: p})
	if err != nil {
		return st, err
	}
	dec := m.Tokenizer.NewDecoder()
	stops := sample.NewStopMatcher(p.Stop)
	stopped := false
	for !stopped {
		tok, err := h.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			h.Cancel()
			return st, err
		}
		st.generated++
		var text string
		text, stopped = stops.Push(dec.Add(tok))
		emit(text)
		if stopped {
			h.Stop()
		}
	}
	if !stopped {
		if text, hit := stops.Push(dec.Flush()); hit {
			emit(text)
		} else {
			emit(text + stops.Flush())
		}
	}
	// Drain to the end so Finish and Timing are final.
	for {
		if _, err := h.Next(ctx); err != nil {
			break
		}
	}
	_, st.finish, err = h.Finish()
	if err != nil {
		return st, err
	}
	if stopped {
		st.finish = sample.FinishStop
	}
	added, first, ended := h.Timing()
	st.prefill, st.decode = first.Sub(added), ended.Sub(first)
	return st, nil
}
