package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// Job is an admitted request as a Router sees it: token ids and sampling.
type Job struct {
	ID       string
	Tokens   []int32
	Params   sample.Params
	Priority int

	// Observation hooks the gateway sets; routers report through Placed
	// and Resumed.
	onPlaced  func(took time.Duration)
	onResumed func()
}

// Placed reports that the job's workers were chosen, took after the router
// started on it; it marks the end of the job's queueing at the gateway.
func (j *Job) Placed(took time.Duration) {
	if j.onPlaced != nil {
		j.onPlaced(took)
	}
}

// Resumed reports that the job moved to another worker after a failure.
func (j *Job) Resumed() {
	if j.onResumed != nil {
		j.onResumed()
	}
}

// Router runs jobs on workers.
type Router interface {
	// Generate runs job and calls emit with each generated token in order,
	// each exactly once, then returns the finish reason. An emit error ends
	// the job (its work is cancelled) and is returned unchanged. Generate
	// must return when ctx ends.
	Generate(ctx context.Context, job *Job, emit func(int32) error) (string, error)
	// Ready reports whether the router can take requests now.
	Ready(ctx context.Context) error
}

// Config configures a Gateway.
type Config struct {
	// APIKeys, when not empty, are the accepted bearer tokens.
	APIKeys []string
	// MaxAdmittedTokens bounds the prompt plus max_tokens of all unfinished
	// requests; past it requests are refused with ErrOverloaded.
	MaxAdmittedTokens int
	// DefaultMaxTokens applies when a request leaves max_tokens unset.
	DefaultMaxTokens int
	// MaxBodyBytes bounds an HTTP request body.
	MaxBodyBytes int64
	// RetryAfter is the hint sent with 429 answers.
	RetryAfter time.Duration
	Logger     *slog.Logger
}

// DefaultConfig returns limits fit for one small model.
func DefaultConfig() Config {
	return Config{MaxAdmittedTokens: 1 << 16, DefaultMaxTokens: 256, MaxBodyBytes: 1 << 20, RetryAfter: time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.MaxAdmittedTokens < 1 || c.DefaultMaxTokens < 1 || c.MaxBodyBytes < 1 || c.RetryAfter <= 0 {
		return fmt.Errorf("%w: %+v", ErrInvalidConfig, c)
	}
	for i, k := range c.APIKeys {
		if strings.TrimSpace(k) == "" {
			return fmt.Errorf("%w: API key %d is empty", ErrInvalidConfig, i)
		}
	}
	return nil
}

// Model describes the served model.
type Model struct {
	// Name is what clients put in "model"; ID (the worker's model id) is
	// accepted too.
	Name          string
	ID            string
	ContextLength int
	Vocab         int
	Tokenizer     *tokenizer.Tokenizer
}

// Gateway is the serving core under the HTTP and gRPC edges. Safe for
// concurrent use.
type Gateway struct {
	cfg     Config
	model   Model
	router  Router
	metrics *metrics.Gateway
	log     *slog.Logger
	keys    [][sha256.Size]byte
	nextID  atomic.Uint64
	// control holds the text of the model's control tokens, which chat
	// content must not contain (see prepare).
	control []string

	mu       sync.Mutex
	admitted int // prompt + max tokens of unfinished requests
}

// New returns a gateway serving m through router. Metrics go to reg.
func New(cfg Config, m Model, router Router, reg *metrics.Registry) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if m.Tokenizer == nil || m.ContextLength < 1 || m.Vocab < 1 || m.Name == "" {
		return nil, fmt.Errorf("%w: incomplete model description", ErrInvalidConfig)
	}
	if router == nil || reg == nil {
		return nil, fmt.Errorf("%w: nil router or registry", ErrInvalidConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, model: m, router: router, metrics: metrics.NewGateway(reg), log: log}
	// Keys are compared as digests so the comparison's time depends on
	// neither the key's content nor its length.
	for _, k := range cfg.APIKeys {
		g.keys = append(g.keys, sha256.Sum256([]byte(k)))
	}
	for id := range m.Tokenizer.VocabSize() {
		if m.Tokenizer.TokenType(int32(id)) != tokenizer.TypeControl {
			continue
		}
		if text, ok := m.Tokenizer.TokenText(int32(id)); ok && text != "" {
			g.control = append(g.control, text)
		}
	}
	return g, nil
}

// Model returns the served model.
func (g *Gateway) Model() Model { return g.model }

// Authorize checks a bearer token against the configured keys; with no keys
// configured every caller is accepted.
func (g *Gateway) Authorize(token string) error {
	if len(g.keys) == 0 {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, k := range g.keys {
		ok |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	if ok != 1 || token == "" {
		return ErrUnauthenticated
	}
	return nil
}

// Input is one generation request, from either edge. Exactly one of Prompt,
// Messages or PromptTokens is used.
type Input struct {
	Model        string
	Prompt       string
	Messages     []tokenizer.Message
	PromptTokens []int32
	// Params.MaxTokens 0 takes Config.DefaultMaxTokens.
	Params   sample.Params
	Priority int
}

// Delta is new output: text (complete UTF-8, stop strings removed) and the
// tokens generated since the last delta.
type Delta struct {
	Text   string
	Tokens []int32
}

// Result is a finished request.
type Result struct {
	Text             string
	Tokens           []int32
	Finish           string
	PromptTokens     int
	CompletionTokens int
}

// errStopped ends a router's stream when a stop string matched.
var errStopped = errors.New("gateway: stop string matched")

// CheckModel resolves a requested model name.
func (g *Gateway) CheckModel(name string) error {
	if name == g.model.Name || (g.model.ID != "" && name == g.model.ID) {
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnknownModel, name)
}

// prepare validates in and returns the job to run.
func (g *Gateway) prepare(in Input) (*Job, error) {
	if err := g.CheckModel(in.Model); err != nil {
		return nil, err
	}
	p := in.Params
	defaulted := p.MaxTokens == 0
	if defaulted {
		p.MaxTokens = g.cfg.DefaultMaxTokens
	}
	if p.MaxTokens < 0 {
		return nil, fieldErr("max_tokens", "must be positive, got %d", p.MaxTokens)
	}
	if err := p.Validate(g.model.Vocab); err != nil {
		return nil, fieldErr(paramField(err), "%v", strings.TrimPrefix(err.Error(), sample.ErrInvalidParams.Error()+": "))
	}
	var ids []int32
	tok := g.model.Tokenizer
	switch {
	case len(in.Messages) > 0:
		for i, m := range in.Messages {
			switch m.Role {
			case "system", "user", "assistant", "tool":
			default:
				return nil, fieldErr(fmt.Sprintf("messages[%d].role", i), "unknown role %q", m.Role)
			}
			// The rendered conversation is encoded with control tokens
			// recognised (the template's own turn markers), so content
			// that spells one could forge a turn: refuse it.
			for _, c := range g.control {
				if strings.Contains(m.Content, c) {
					return nil, fieldErr(fmt.Sprintf("messages[%d].content", i), "contains the reserved control token %q", c)
				}
			}
		}
		text, err := tok.Render(in.Messages, true)
		if err != nil {
			return nil, fieldErr("messages", "%v", err)
		}
		ids = tok.Encode(text, tokenizer.EncodeOptions{ParseSpecial: true})
	case len(in.PromptTokens) > 0:
		for i, t := range in.PromptTokens {
			if t < 0 || int(t) >= g.model.Vocab {
				return nil, fieldErr("prompt", "token %d at %d outside the vocabulary of %d", t, i, g.model.Vocab)
			}
		}
		ids = append([]int32(nil), in.PromptTokens...)
	case in.Prompt != "":
		ids = tok.Encode(in.Prompt, tokenizer.EncodeOptions{AddBOS: tok.AddBOS()})
	}
	if len(ids) == 0 {
		return nil, fieldErr("prompt", "empty prompt")
	}
	if defaulted && len(ids) < g.model.ContextLength {
		// An unset max_tokens means "as much as fits", up to the default.
		p.MaxTokens = min(p.MaxTokens, g.model.ContextLength-len(ids))
	}
	if len(ids)+p.MaxTokens > g.model.ContextLength {
		return nil, fmt.Errorf("%w: %d prompt tokens plus max_tokens %d > %d", ErrTooLong, len(ids), p.MaxTokens, g.model.ContextLength)
	}
	id := fmt.Sprintf("req-%d-%d", time.Now().UnixNano(), g.nextID.Add(1))
	return &Job{ID: id, Tokens: ids, Params: p, Priority: in.Priority}, nil
}

// paramField names the field a sample.Params.Validate error is about: its
// message is "<ErrInvalidParams>: <field> <reason>".
func paramField(err error) string {
	msg := strings.TrimPrefix(err.Error(), sample.ErrInvalidParams.Error()+": ")
	if f, _, ok := strings.Cut(msg, " "); ok && f != "" {
		return f
	}
	return "sampling"
}

// admit charges the job's tokens against the admission limit; the returned
// function gives them back.
func (g *Gateway) admit(job *Job) (func(), error) {
	n := len(job.Tokens) + job.Params.MaxTokens
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.admitted+n > g.cfg.MaxAdmittedTokens {
		return nil, fmt.Errorf("%w: %d tokens admitted, %d more would pass the limit of %d", ErrOverloaded, g.admitted, n, g.cfg.MaxAdmittedTokens)
	}
	g.admitted += n
	g.metrics.QueuedTokens.Set(float64(g.admitted))
	return func() {
		g.mu.Lock()
		g.admitted -= n
		g.metrics.QueuedTokens.Set(float64(g.admitted))
		g.mu.Unlock()
	}, nil
}

// Generate runs in and calls sink with each piece of new output as it is
// generated (sink may be nil). A sink error cancels the request.
func (g *Gateway) Generate(ctx context.Context, in Input, sink func(Delta) error) (Result, error) {
	arrived := time.Now()
	job, err := g.prepare(in)
	if err != nil {
		g.metrics.Requests.WithLabelValues("client_error").Inc()
		return Result{}, err
	}
	release, err := g.admit(job)
	if err != nil {
		g.metrics.Requests.WithLabelValues("rejected").Inc()
		return Result{}, err
	}
	defer release()
	g.metrics.Running.Inc()
	defer g.metrics.Running.Dec()
	g.metrics.PromptTokens.Add(float64(len(job.Tokens)))

	res := Result{PromptTokens: len(job.Tokens)}
	dec := g.model.Tokenizer.NewDecoder()
	stops := sample.NewStopMatcher(job.Params.Stop)
	var last time.Time
	var pending []int32
	emit := func(t int32) error {
		now := time.Now()
		if last.IsZero() {
			g.metrics.TTFT.Observe(now.Sub(arrived).Seconds())
		} else {
			g.metrics.InterToken.Observe(now.Sub(last).Seconds())
		}
		last = now
		res.Tokens = append(res.Tokens, t)
		pending = append(pending, t)
		text, hit := stops.Push(dec.Add(t))
		if text != "" || hit {
			res.Text += text
			if sink != nil {
				if err := sink(Delta{Text: text, Tokens: pending}); err != nil {
					return err
				}
			}
			pending = nil
		}
		if hit {
			return errStopped
		}
		return nil
	}
	job.onPlaced = func(took time.Duration) {
		g.metrics.Placement.Observe(took.Seconds())
		g.metrics.Queue.Observe(time.Since(arrived).Seconds())
	}
	job.onResumed = g.metrics.Resumes.Inc
	finish, err := g.router.Generate(ctx, job, emit)
	res.CompletionTokens = len(res.Tokens)
	g.metrics.OutputTokens.Add(float64(res.CompletionTokens))
	switch {
	case errors.Is(err, errStopped):
		res.Finish = string(sample.FinishStop)
	case err != nil:
		outcome := "error"
		if ctx.Err() != nil {
			outcome = "cancelled"
		}
		g.metrics.Requests.WithLabelValues(outcome).Inc()
		return res, err
	default:
		res.Finish = finish
		text, hit := stops.Push(dec.Flush())
		if !hit {
			text += stops.Flush()
		} else {
			res.Finish = string(sample.FinishStop)
		}
		res.Text += text
		if sink != nil && (text != "" || len(pending) > 0) {
			if err := sink(Delta{Text: text, Tokens: pending}); err != nil {
				g.metrics.Requests.WithLabelValues("cancelled").Inc()
				return res, err
			}
		}
	}
	g.metrics.EndToEnd.Observe(time.Since(arrived).Seconds())
	g.metrics.Requests.WithLabelValues("ok").Inc()
	return res, nil
}

// Tokenize encodes text with the model's tokenizer.
func (g *Gateway) Tokenize(model, text string, addSpecial bool) ([]int32, error) {
	if err := g.CheckModel(model); err != nil {
		return nil, err
	}
	tok := g.model.Tokenizer
	return tok.Encode(text, tokenizer.EncodeOptions{AddBOS: addSpecial && tok.AddBOS()}), nil
}

// Ready reports whether requests can be served now.
func (g *Gateway) Ready(ctx context.Context) error { return g.router.Ready(ctx) }
