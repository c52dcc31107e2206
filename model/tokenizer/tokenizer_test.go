package tokenizer

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewRejectsBadVocab(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Vocab)
		wantErr error
	}{
		{"no tokens", func(v *Vocab) { v.Tokens, v.Types = nil, nil }, ErrInvalidVocab},
		{"types length", func(v *Vocab) { v.Types = v.Types[:3] }, ErrInvalidVocab},
		{"scores length", func(v *Vocab) { v.Scores = []float32{1} }, ErrInvalidVocab},
		{"bos out of range", func(v *Vocab) { v.BOS = int32(len(v.Tokens)) }, ErrInvalidVocab},
		{"eos below -1", func(v *Vocab) { v.EOS = -2 }, ErrInvalidVocab},
		{"merge without space", func(v *Vocab) { v.Merges = append(v.Merges, "ab") }, ErrInvalidVocab},
		{"unknown model", func(v *Vocab) { v.Model = "wordpiece" }, ErrUnsupportedModel},
		{"unknown pre-tokenizer", func(v *Vocab) { v.Pre = "klingon" }, ErrUnknownPreTokenizer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := byteLevelVocab()
			tt.edit(&v)
			if _, err := New(v); !errors.Is(err, tt.wantErr) {
				t.Fatalf("New: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	tok := mustNew(t, byteLevelVocab("<tool>"))
	if got, want := tok.VocabSize(), 3+256+9+1; got != want {
		t.Errorf("VocabSize = %d, want %d", got, want)
	}
	if tok.BOS() != 1 || tok.EOS() != 0 || tok.PAD() != -1 {
		t.Errorf("BOS, EOS, PAD = %d, %d, %d, want 1, 0, -1", tok.BOS(), tok.EOS(), tok.PAD())
	}
	if tok.AddBOS() || tok.AddEOS() {
		t.Errorf("AddBOS, AddEOS = %v, %v, want false, false", tok.AddBOS(), tok.AddEOS())
	}
	if id, ok := tok.Lookup("Ġthe"); !ok || tok.TokenType(id) != TypeNormal {
		t.Errorf("Lookup(Ġthe) = %d, %v", id, ok)
	}
	if _, ok := tok.Lookup("missing"); ok {
		t.Error("Lookup(missing) found a token")
	}
	for _, id := range []int32{-1, int32(tok.VocabSize()), 1 << 30} {
		if _, ok := tok.TokenText(id); ok {
			t.Errorf("TokenText(%d) ok for an out-of-range id", id)
		}
		if tok.TokenType(id) != TypeUndefined || tok.IsEOG(id) {
			t.Errorf("TokenType/IsEOG(%d) accepted an out-of-range id", id)
		}
	}
	eog := map[string]bool{"<|endoftext|>": true, "<|im_end|>": true, "<|im_start|>": false, "Ġthe": false}
	for text, want := range eog {
		id, _ := tok.Lookup(text)
		if got := tok.IsEOG(id); got != want {
			t.Errorf("IsEOG(%q) = %v, want %v", text, got, want)
		}
	}
}

func TestEncodeSpecialTokens(t *testing.T) {
	tok := mustNew(t, byteLevelVocab("<tool>"))
	start, _ := tok.Lookup("<|im_start|>")
	end, _ := tok.Lookup("<|im_end|>")
	tool, _ := tok.Lookup("<tool>")
	lt, _ := tok.Lookup("<")
	tests := []struct {
		name  string
		text  string
		opts  EncodeOptions
		check func([]int32) bool
	}{
		{"control parsed", "<|im_start|>x<|im_end|>", EncodeOptions{ParseSpecial: true},
			func(ids []int32) bool { return len(ids) == 3 && ids[0] == start && ids[2] == end }},
		{"control as text", "<|im_start|>", EncodeOptions{},
			func(ids []int32) bool { return len(ids) > 1 && ids[0] == lt }},
		{"user-defined always parsed", "a<tool>b", EncodeOptions{},
			func(ids []int32) bool { return len(ids) == 3 && ids[1] == tool }},
		{"adjacent specials", "<|im_end|><|im_end|>", EncodeOptions{ParseSpecial: true},
			func(ids []int32) bool { return len(ids) == 2 && ids[0] == end && ids[1] == end }},
		{"bos added", "x", EncodeOptions{AddBOS: true},
			func(ids []int32) bool { return len(ids) == 2 && ids[0] == tok.BOS() }},
		{"empty", "", EncodeOptions{ParseSpecial: true}, func(ids []int32) bool { return len(ids) == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := tok.Encode(tt.text, tt.opts)
			if !tt.check(ids) {
				t.Errorf("Encode(%q, %+v) = %v", tt.text, tt.opts, ids)
			}
			if back := tok.Decode(ids, SkipSpecial()); tt.opts.AddBOS && back != tt.text {
				t.Errorf("Decode(SkipSpecial) = %q, want %q", back, tt.text)
			}
		})
	}
}

func TestBPEMergesByRank(t *testing.T) {
	tok := mustNew(t, byteLevelVocab())
	tests := []struct {
		text string
		want []string
	}{
		{" the", []string{"Ġthe"}},
		{" and", []string{"Ġand"}},
		{"there", []string{"t", "he", "r", "e"}},
		{"  the", []string{"Ġ", "Ġthe"}},
		{"inner", []string{"in", "n", "er"}},
	}
	for _, tt := range tests {
		ids := tok.Encode(tt.text, EncodeOptions{})
		got := make([]string, len(ids))
		for i, id := range ids {
			got[i], _ = tok.TokenText(id)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Encode(%q) (-want +got):\n%s", tt.text, diff)
		}
	}
}

// TestLlama3IgnoreMerges: the Llama-3 family emits a piece that is itself a
// token directly, even when the merges would not build it.
func TestLlama3IgnoreMerges(t *testing.T) {
	v := byteLevelVocab()
	v.Tokens = append(v.Tokens, "Ġcat")
	v.Types = append(v.Types, int32(TypeNormal))
	cat := int32(len(v.Tokens) - 1)
	for _, tt := range []struct {
		pre  string
		want int
	}{{"llama3", 1}, {"gpt2", 4}} {
		v.Pre = tt.pre
		ids := mustNew(t, v).Encode(" cat", EncodeOptions{})
		if len(ids) != tt.want || (tt.want == 1 && ids[0] != cat) {
			t.Errorf("pre %s: Encode(\" cat\") = %v, want %d token(s)", tt.pre, ids, tt.want)
		}
	}
}

func TestSPMSynthetic(t *testing.T) {
	tok := mustNew(t, spmVocab())
	text := func(ids []int32) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[i], _ = tok.TokenText(id)
		}
		return out
	}
	tests := []struct {
		name string
		in   string
		opts EncodeOptions
		want []string
	}{
		{"merge by score", "abc", EncodeOptions{}, []string{"▁abc"}},
		{"bos and prefix space", "ab", EncodeOptions{AddBOS: true}, []string{"<s>", "▁ab"}},
		{"byte fallback", "aé", EncodeOptions{}, []string{"▁a", "<0xC3>", "<0xA9>"}},
		{"space prefix after special", "</s>a", EncodeOptions{ParseSpecial: true}, []string{"</s>", "▁a"}},
		{"special as text", "</s>", EncodeOptions{}, []string{"▁", "<0x3C>", "<0x2F>", "<0x73>", "<0x3E>"}},
		{"special parsed", "a</s>a", EncodeOptions{ParseSpecial: true}, []string{"▁a", "</s>", "▁a"}},
		{"empty", "", EncodeOptions{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := text(tok.Encode(tt.in, tt.opts))
			if diff := cmp.Diff(tt.want, got, cmpEmptyStrings()); diff != "" {
				t.Errorf("Encode(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
	ids := tok.Encode("ab c", EncodeOptions{AddBOS: true})
	if got := tok.Decode(ids, SkipSpecial()); got != "ab c" {
		t.Errorf("Decode = %q, want %q", got, "ab c")
	}
	if got := tok.Decode(ids); got != "<s>ab c" {
		t.Errorf("Decode with specials = %q, want %q", got, "<s>ab c")
	}
}

// TestConcurrentEncode shares one Tokenizer between goroutines (run with
// -race): Encode must be safe for concurrent use.
func TestConcurrentEncode(t *testing.T) {
	for _, v := range []Vocab{byteLevelVocab(), spmVocab()} {
		tok := mustNew(t, v)
		want := tok.Encode("the cat and the hat", EncodeOptions{})
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					if got := tok.Encode("the cat and the hat", EncodeOptions{}); !cmp.Equal(got, want) {
						errs <- cmp.Diff(want, got)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("concurrent Encode differs (-want +got):\n%s", e)
		}
	}
}
