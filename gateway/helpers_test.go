package gateway_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/gateway"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model/tokenizer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testModel = "tiny-chat"

// testTokenizer is a small SentencePiece vocabulary with byte fallback,
// ChatML control tokens and one token per lowercase letter.
func testTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	v := tokenizer.Vocab{Model: "llama", BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true, AddSpacePrefix: true,
		ChatTemplate: "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"}
	add := func(s string, typ tokenizer.TokenType) {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, int32(typ))
		v.Scores = append(v.Scores, 0)
	}
	add("<unk>", tokenizer.TypeUnknown)
	add("<s>", tokenizer.TypeControl)
	add("</s>", tokenizer.TypeControl)
	add("<|im_start|>", tokenizer.TypeControl)
	add("<|im_end|>", tokenizer.TypeControl)
	const hex = "0123456789ABCDEF"
	for b := 0; b < 256; b++ {
		add("<0x"+string(hex[b>>4])+string(hex[b&15])+">", tokenizer.TypeByte)
	}
	add("▁", tokenizer.TypeNormal)
	for c := 'a'; c <= 'z'; c++ {
		add(string(c), tokenizer.TypeNormal)
	}
	tok, err := tokenizer.New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ids spells text in the test vocabulary, one token per character.
func ids(t testing.TB, tok *tokenizer.Tokenizer, text string) []int32 {
	t.Helper()
	var out []int32
	for _, r := range text {
		s := string(r)
		if r == ' ' {
			s = "▁"
		}
		id, ok := tok.Lookup(s)
		if !ok {
			t.Fatalf("no token for %q", s)
		}
		out = append(out, id)
	}
	return out
}

// fakeRouter streams a scripted reply and records the jobs it ran.
type fakeRouter struct {
	reply  []int32
	finish string
	err    error         // returned after the reply
	block  chan struct{} // when set, Generate waits on it (or ctx) after the reply
	ready  error

	mu        sync.Mutex
	jobs      []*gateway.Job
	cancelled int
}

var _ gateway.Router = (*fakeRouter)(nil)

func (f *fakeRouter) Generate(ctx context.Context, job *gateway.Job, emit func(int32) error) (string, error) {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	f.mu.Unlock()
	for i, t := range f.reply {
		if i >= job.Params.MaxTokens {
			return "length", nil
		}
		if err := emit(t); err != nil {
			return "", err
		}
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			f.mu.Lock()
			f.cancelled++
			f.mu.Unlock()
			return "", ctx.Err()
		}
	}
	if f.err != nil {
		return "", f.err
	}
	return f.finish, nil
}

func (f *fakeRouter) Ready(context.Context) error { return f.ready }

func (f *fakeRouter) lastJob() *gateway.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.jobs) == 0 {
		return nil
	}
	return f.jobs[len(f.jobs)-1]
}

func (f *fakeRouter) cancels() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled
}

var errBoom = errors.New("boom")

// newGateway builds a gateway over r with cfg adjusted by adjust.
func newGateway(t testing.TB, r gateway.Router, adjust func(*gateway.Config)) (*gateway.Gateway, *metrics.Registry, *tokenizer.Tokenizer) {
	t.Helper()
	tok := testTokenizer(t)
	cfg := gateway.DefaultConfig()
	cfg.DefaultMaxTokens = 16
	if adjust != nil {
		adjust(&cfg)
	}
	reg := metrics.NewRegistry()
	g, err := gateway.New(cfg, gateway.Model{Name: testModel, ID: testModel + "@abc", ContextLength: 128, Vocab: tok.VocabSize(), Tokenizer: tok}, r, reg)
	if err != nil {
		t.Fatal(err)
	}
	return g, reg, tok
}
