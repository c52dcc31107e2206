package tokenizer

import "testing"

// byteLevelVocab is a small synthetic byte-level BPE vocabulary: the 256
// byte symbols, a few merges and ChatML control tokens, so tests that need
// no real model always run.
func byteLevelVocab(extra ...string) Vocab {
	runes := gpt2ByteRunes()
	v := Vocab{Model: "gpt2", Pre: "gpt2", BOS: -1, EOS: -1, UNK: -1, PAD: -1}
	add := func(s string, typ TokenType) int32 {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, int32(typ))
		return int32(len(v.Tokens) - 1)
	}
	v.EOS = add("<|endoftext|>", TypeControl)
	v.BOS = add("<|im_start|>", TypeControl)
	add("<|im_end|>", TypeControl)
	for _, r := range runes {
		add(string(r), TypeNormal)
	}
	v.Merges = []string{"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "Ġan d", "e r", "Ġ Ġ"}
	for _, m := range v.Merges {
		l, r, _ := cut(m)
		add(l+r, TypeNormal)
	}
	for _, s := range extra {
		add(s, TypeUserDefined)
	}
	return v
}

// spmVocab is a small synthetic SentencePiece vocabulary with byte
// fallback tokens.
func spmVocab() Vocab {
	v := Vocab{Model: "llama", BOS: 1, EOS: 2, UNK: 0, PAD: -1, AddBOS: true, AddSpacePrefix: true}
	add := func(s string, typ TokenType, score float32) {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, int32(typ))
		v.Scores = append(v.Scores, score)
	}
	add("<unk>", TypeUnknown, 0)
	add("<s>", TypeControl, 0)
	add("</s>", TypeControl, 0)
	for b := 0; b < 256; b++ {
		add(byteTokenText(byte(b)), TypeByte, 0)
	}
	for i, s := range []string{"▁", "a", "b", "c", "▁a", "ab", "▁ab", "bc", "▁abc"} {
		add(s, TypeNormal, -float32(i))
	}
	return v
}

func byteTokenText(b byte) string {
	const hex = "0123456789ABCDEF"
	return "<0x" + string(hex[b>>4]) + string(hex[b&15]) + ">"
}

func cut(s string) (l, r string, ok bool) {
	for i := 1; i < len(s); i++ {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func mustNew(tb testing.TB, v Vocab) *Tokenizer {
	tb.Helper()
	tok, err := New(v)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return tok
}
