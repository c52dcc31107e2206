package tokenizer

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandemserve/tandem/model/gguf"
)

// fuzzTokenizers are the synthetic vocabularies plus SmolLM2 when
// TANDEM_MODEL names it, so fuzzing always runs and covers the real merges
// when it can.
func fuzzTokenizers(f *testing.F) (bpe []*Tokenizer, spm *Tokenizer) {
	f.Helper()
	bpe = []*Tokenizer{mustNew(f, byteLevelVocab("<tool>"))}
	for _, pre := range []string{"llama3", "qwen2", "default", "smollm"} {
		v := byteLevelVocab()
		v.Pre = pre
		bpe = append(bpe, mustNew(f, v))
	}
	if path := smolLM2Path(); path != "" {
		if _, err := os.Stat(path); err == nil {
			g, err := gguf.Open(path)
			if err != nil {
				f.Fatal(err)
			}
			tok, err := FromGGUF(g)
			g.Close()
			if err != nil {
				f.Fatal(err)
			}
			bpe = append(bpe, tok)
		}
	}
	return bpe, mustNew(f, spmVocab())
}

// FuzzEncode: arbitrary text never panics; byte-level BPE restores the text
// exactly (invalid UTF-8 bytes come back as U+FFFD, as llama.cpp encodes
// them, minus bytes the vocabulary cannot spell) and SentencePiece restores
// valid UTF-8.
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", " ", "hello world", "a  b\n\n c ", "<|im_start|>user\n<|im_end|>", "\xff\xfe", "😀👨‍👩‍👧", "123456789", "It'S 're", "\t\r\n\u00a0\u3000", "ab</s>c"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	bpe, spm := fuzzTokenizers(f)
	f.Fuzz(func(t *testing.T, text string, parseSpecial bool) {
		opts := EncodeOptions{ParseSpecial: parseSpecial}
		for _, tok := range bpe {
			want := withoutUnencodableBytes(tok, replaceInvalidUTF8(text))
			ids := tok.Encode(text, opts)
			if got := tok.Decode(ids); got != want {
				t.Fatalf("Decode(Encode(%q)) = %q (pre %q)", text, got, tok.bpe.pre.name)
			}
		}
		ids := spm.Encode(text, opts)
		for _, id := range ids {
			if id < 0 || int(id) >= spm.VocabSize() {
				t.Fatalf("spm Encode(%q) produced id %d", text, id)
			}
		}
		// SentencePiece round trips valid UTF-8 without U+2581 (which decodes
		// as a space); like llama.cpp it groups invalid bytes with the bytes
		// after them, so a following space comes back as its U+2581 bytes.
		if !parseSpecial && utf8.ValidString(text) && !strings.Contains(text, spaceMarker) {
			if got := spm.Decode(ids); got != text {
				t.Fatalf("spm Decode(Encode(%q)) = %q", text, got)
			}
		}
	})
}

// FuzzMergeLoops: the array merge loop for short pieces and the heap merge
// loop for long ones give the same tokens for every piece.
func FuzzMergeLoops(f *testing.F) {
	for _, s := range []string{"hello", " the", "aaaaaaaaaaaa", "supercalifragilistic", "😀😀", "\x00\xff"} {
		f.Add(s)
	}
	bpe, _ := fuzzTokenizers(f)
	f.Fuzz(func(t *testing.T, word string) {
		if word == "" {
			return
		}
		for _, tok := range bpe {
			small := tok.bpe.encodeSmallWord(tok, word, &bpeScratch{}, nil)
			heap := tok.bpe.encodeHeapWord(tok, word, &bpeScratch{}, nil)
			if !slices.Equal(small, heap) {
				t.Fatalf("piece %q: array loop %v, heap loop %v", word, small, heap)
			}
		}
	})
}

// withoutUnencodableBytes removes the bytes whose byte-level symbol the
// vocabulary lacks: Encode drops them (see bpeModel.emit).
func withoutUnencodableBytes(tok *Tokenizer, s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if tok.bpe.byteSym[s[i]] < tok.bpe.nVocab {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// FuzzDecoder: arbitrary id streams, in range or not, never panic and the
// streamed output is valid UTF-8.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 255, 255, 255, 255, 0x9f, 0, 0, 0})
	f.Add([]byte{0xF0, 0, 0, 0, 0x9F, 0, 0, 0})
	f.Add([]byte{})
	bpe, spm := fuzzTokenizers(f)
	toks := append(bpe, spm)
	f.Fuzz(func(t *testing.T, raw []byte) {
		ids := make([]int32, len(raw)/4)
		for i := range ids {
			ids[i] = int32(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		for _, tok := range toks {
			_ = tok.Decode(ids)
			_ = tok.Decode(ids, SkipSpecial())
			d := tok.NewDecoder()
			out := ""
			for _, id := range ids {
				out += d.Add(id)
			}
			out += d.Flush()
			if !utf8.ValidString(out) {
				t.Fatalf("streamed output %q is not valid UTF-8", out)
			}
			if d.Pending() != 0 {
				t.Fatalf("Flush left %d bytes pending", d.Pending())
			}
		}
	})
}

// FuzzNew builds tokenizers from arbitrary metadata (model files are
// untrusted input too): New must return an error or a tokenizer that
// encodes, decodes and renders without panicking.
func FuzzNew(f *testing.F) {
	f.Add("gpt2", "smollm", "a\nb\nab\n<|im_start|>\n<|im_end|>", []byte{1, 1, 1, 3, 3}, "a b", "<|im_start|>system\nHi<|im_end|>", int8(0))
	f.Add("llama", "", "<unk>\n<s>\n</s>\n▁a\n<0x41>", []byte{2, 3, 3, 1, 6}, "", "[INST] <<SYS>>", int8(1))
	f.Add("gpt2", "llama3", "x\ny\n", []byte{9, 4}, "x y\n y", "<|user|><|assistant|>", int8(-1))
	f.Fuzz(func(t *testing.T, model, pre, tokens string, types []byte, merges, template string, bos int8) {
		v := Vocab{Model: model, Pre: pre, Tokens: strings.Split(tokens, "\n"), ChatTemplate: template,
			BOS: int32(bos), EOS: -1, UNK: 0, PAD: -1, AddSpacePrefix: true}
		if merges != "" {
			v.Merges = strings.Split(merges, "\n")
		}
		for i := range v.Tokens {
			typ := int32(1)
			if i < len(types) {
				typ = int32(types[i] % 8)
			}
			v.Types = append(v.Types, typ)
		}
		tok, err := New(v)
		if err != nil {
			return
		}
		for _, s := range []string{tokens, template, "hello world 123", "\xff"} {
			ids := tok.Encode(s, EncodeOptions{AddBOS: true, ParseSpecial: true})
			_ = tok.Decode(ids)
		}
		msgs := []Message{{Role: "system", Content: tokens}, {Role: "user", Content: template}}
		if _, err := tok.EncodeChat(msgs, true); err != nil && !errors.Is(err, ErrNoChatTemplate) && !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("EncodeChat: unexpected error %v", err)
		}
	})
}
