package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/backends"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// modelFlags are the flags every command that runs a model shares.
type modelFlags struct {
	path    string
	backend string
	threads int
	kvDType string
	act     string
}

func (f *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "model", model.DefaultPath(), "GGUF model file")
	fs.StringVar(&f.backend, "backend", "cpu", fmt.Sprintf("compute backend %v", backends.Names()))
	fs.IntVar(&f.threads, "threads", 0, "CPU threads (0 = one per core)")
	fs.StringVar(&f.kvDType, "kv-dtype", "f16", "KV cache element type: f16 or int8")
	fs.StringVar(&f.act, "activations", "f32", "activation precision of quantized matrix products: f32 (accurate) or q8 (llama.cpp-compatible, faster prefill)")
}

// open loads the model onto a fresh backend; closing the returned function
// releases both.
func (f *modelFlags) open() (*model.Model, kernels.Backend, func(), error) {
	act, err := kernels.ParseActivations(f.act)
	if err != nil {
		return nil, nil, nil, err
	}
	be, err := backends.Open(f.backend, backends.Options{Threads: f.threads, Activations: act})
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := model.Open(f.path, be)
	if err != nil {
		be.Close()
		return nil, nil, nil, err
	}
	return m, be, func() { m.Close(); be.Close() }, nil
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
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *prompt == "" {
		fmt.Fprintln(stderr, "tandem generate: --prompt is required")
		return errUsage
	}
	p.Temperature, p.TopK, p.TopP, p.MinP = float32(*temp), *topK, float32(*topP), float32(*minP)
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
	if err := p.Validate(m.Llama.Config().Vocab); err != nil {
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

// prefillChunk bounds the rows of one forward pass so activations stay small.
const prefillChunk = 512

// generateOne runs one sequence on a private, contiguous KV cache: the
// simplest correct use of the model, which the batched engine must match.
func generateOne(ctx context.Context, m *model.Model, ids []int32, p sample.Params, kvDType kernels.KVDType, emit func(string)) (genStats, error) {
	cfg := m.Llama.Config()
	st := genStats{promptTokens: len(ids)}
	if len(ids) == 0 {
		return st, errors.New("generate: empty prompt")
	}
	total := len(ids) + p.MaxTokens
	if total > cfg.ContextLength {
		return st, fmt.Errorf("generate: prompt of %d tokens plus %d new tokens exceeds the context of %d", len(ids), p.MaxTokens, cfg.ContextLength)
	}
	const blockSize = 16
	nblocks := (total + blockSize - 1) / blockSize
	cache, err := m.Llama.Backend().NewKVCache(cfg.KVSpec(nblocks, blockSize, kvDType))
	if err != nil {
		return st, err
	}
	defer cache.Close()
	table := make([]int32, nblocks)
	for i := range table {
		table[i] = int32(i)
	}
	batch := func(tokens []int32, start int) *llama.Batch {
		b := &llama.Batch{Tokens: tokens}
		for i := range tokens {
			pos := start + i
			b.Positions = append(b.Positions, int32(pos))
			b.Slots = append(b.Slots, int32(pos))
		}
		b.Seqs = []kernels.AttnSeq{{QueryLen: len(tokens), KVLen: start + len(tokens), Blocks: table}}
		b.LogitRows = []int32{int32(len(tokens) - 1)}
		return b
	}

	smp := sample.New(p)
	smp.AcceptPrompt(ids)
	dec := m.Tokenizer.NewDecoder()
	stops := sample.NewStopMatcher(p.Stop)
	t0 := time.Now()
	var logits []float32
	for start := 0; start < len(ids); start += prefillChunk {
		end := min(start+prefillChunk, len(ids))
		if logits, err = m.Llama.Forward(ctx, cache, batch(ids[start:end], start), nil); err != nil {
			return st, err
		}
	}
	st.prefill = time.Since(t0)
	t1 := time.Now()
	pos := len(ids)
	stopped := false
	for {
		tok := smp.Sample(logits)
		smp.Accept(tok)
		st.generated++
		st.finish = p.CheckToken(tok, st.generated, m.Tokenizer.IsEOG)
		if st.finish != sample.FinishStop || !m.Tokenizer.IsEOG(tok) {
			var text string
			text, stopped = stops.Push(dec.Add(tok))
			emit(text)
			if stopped {
				st.finish = sample.FinishStop
			}
		}
		if st.finish != sample.FinishNone {
			break
		}
		if logits, err = m.Llama.Forward(ctx, cache, batch([]int32{tok}, pos), nil); err != nil {
			return st, err
		}
		pos++
	}
	if !stopped {
		if text, hit := stops.Push(dec.Flush()); hit {
			emit(text)
		} else {
			emit(text + stops.Flush())
		}
	}
	st.decode = time.Since(t1)
	return st, nil
}
