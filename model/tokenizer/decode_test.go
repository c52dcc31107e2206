package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDecoderHoldsPartialUTF8 feeds a multi-byte character one byte token at
// a time: nothing may come out until the character is complete.
func TestDecoderHoldsPartialUTF8(t *testing.T) {
	bpe := mustNew(t, byteLevelVocab())
	spm := mustNew(t, spmVocab())
	byteID := func(tok *Tokenizer, b byte) int32 {
		if tok.kind == modelSPM {
			id, _ := tok.Lookup(byteTokenText(b))
			return id
		}
		id, _ := tok.Lookup(string(gpt2ByteRunes()[b]))
		return id
	}
	for name, tok := range map[string]*Tokenizer{"bpe": bpe, "spm": spm} {
		t.Run(name, func(t *testing.T) {
			const text = "a😀é"
			d := tok.NewDecoder()
			var got []string
			for i := 0; i < len(text); i++ {
				got = append(got, d.Add(byteID(tok, text[i])))
			}
			want := []string{"a", "", "", "", "😀", "", "é"}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("Add outputs = %q, want %q", got, want)
			}
			if d.Pending() != 0 || d.Flush() != "" {
				t.Errorf("decoder still holds bytes")
			}
		})
	}
}

func TestDecoderInvalidAndOutOfRange(t *testing.T) {
	tok := mustNew(t, byteLevelVocab())
	id := func(b byte) int32 { v, _ := tok.Lookup(string(gpt2ByteRunes()[b])); return v }
	tests := []struct {
		name      string
		ids       []int32
		wantAdds  string
		wantFlush string
	}{
		{"out of range ids", []int32{-5, int32(tok.VocabSize()), 1 << 30}, "\uFFFD\uFFFD\uFFFD", ""},
		{"lone continuation byte", []int32{id(0x80), id('a')}, "\uFFFDa", ""},
		{"truncated sequence then ascii", []int32{id(0xE2), id(0x82), id('x')}, "\uFFFD\uFFFDx", ""},
		{"truncated at end", []int32{id('x'), id(0xF0), id(0x9F)}, "x", "\uFFFD"},
		{"control rendered", []int32{1, id('a'), 2}, "<|im_start|>a<|im_end|>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tok.NewDecoder()
			var b strings.Builder
			for _, id := range tt.ids {
				s := d.Add(id)
				if !utf8.ValidString(s) {
					t.Fatalf("Add returned invalid UTF-8 %q", s)
				}
				b.WriteString(s)
			}
			if b.String() != tt.wantAdds {
				t.Errorf("Add outputs = %q, want %q", b.String(), tt.wantAdds)
			}
			if got := d.Flush(); got != tt.wantFlush {
				t.Errorf("Flush = %q, want %q", got, tt.wantFlush)
			}
		})
	}
}

func TestDecodeSkipSpecial(t *testing.T) {
	tok := mustNew(t, byteLevelVocab())
	ids := tok.Encode("<|im_start|>the<|im_end|>", EncodeOptions{ParseSpecial: true})
	if got := tok.Decode(ids); got != "<|im_start|>the<|im_end|>" {
		t.Errorf("Decode = %q", got)
	}
	if got := tok.Decode(ids, SkipSpecial()); got != "the" {
		t.Errorf("Decode(SkipSpecial) = %q, want %q", got, "the")
	}
	d := tok.NewDecoder(SkipSpecial())
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(d.Add(id))
	}
	if b.String() != "the" {
		t.Errorf("Decoder(SkipSpecial) = %q, want %q", b.String(), "the")
	}
	if got := tok.Decode([]int32{-1, 7}); !strings.HasPrefix(got, "\uFFFD") {
		t.Errorf("Decode of out-of-range id = %q, want U+FFFD first", got)
	}
}

// TestDecoderMatchesDecode streams the SmolLM2 tokens of every reference
// string and checks the concatenation equals Decode.
func TestDecoderMatchesDecode(t *testing.T) {
	tok := loadTokenizer(t, smolLM2Path(), "SmolLM2 decoder")
	f := loadFixture(t, "smollm2.json")
	for i, c := range f.Cases {
		d := tok.NewDecoder()
		var b strings.Builder
		for _, id := range c.IDs {
			b.WriteString(d.Add(id))
		}
		b.WriteString(d.Flush())
		if want := withoutUnencodableBytes(tok, c.Text); b.String() != want {
			t.Errorf("case %d: streamed %q, want %q", i, b.String(), want)
		}
	}
}
