package tokenizer

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tandemserve/tandem/model/gguf"
)

// buildGGUF writes metadata into an in-memory GGUF file and parses it.
func buildGGUF(t *testing.T, kv map[string]any) *gguf.File {
	t.Helper()
	keys := []string{keyModel, keyPre, keyTokens, keyTypes, keyScores, keyMerges, keyBOS, keyEOS, keyUNK, keyPAD,
		keyAddBOS, keyAddEOS, keyAddSpacePrefix, keyChatTemplate, keyEOT, keyEOM}
	var kvs []gguf.KV
	for _, k := range keys {
		x, ok := kv[k]
		if !ok {
			continue
		}
		v, err := gguf.NewValue(x)
		if err != nil {
			t.Fatalf("NewValue(%s): %v", k, err)
		}
		kvs = append(kvs, gguf.KV{Key: k, Value: v})
	}
	var buf bytes.Buffer
	if err := gguf.Write(&buf, kvs, nil); err != nil {
		t.Fatalf("gguf.Write: %v", err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatalf("gguf.Parse: %v", err)
	}
	return f
}

func spmMeta() map[string]any {
	v := spmVocab()
	return map[string]any{
		keyModel:  "llama",
		keyTokens: v.Tokens,
		keyTypes:  v.Types,
		keyScores: v.Scores,
		keyBOS:    uint32(1),
		keyEOS:    uint32(2),
		keyUNK:    uint32(0),
		keyPAD:    uint32(0xFFFFFFFF),
	}
}

func TestVocabFromGGUF(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(map[string]any)
		check   func(Vocab) bool
		wantErr error
	}{
		{"llama defaults", func(map[string]any) {},
			func(v Vocab) bool { return v.AddBOS && v.AddSpacePrefix && !v.AddEOS && v.PAD == -1 && v.BOS == 1 }, nil},
		{"explicit flags", func(m map[string]any) { m[keyAddBOS] = false; m[keyAddSpacePrefix] = false },
			func(v Vocab) bool { return !v.AddBOS && !v.AddSpacePrefix }, nil},
		{"gpt2 defaults", func(m map[string]any) { m[keyModel] = "gpt2"; m[keyPre] = "smollm"; m[keyMerges] = []string{"a b"} },
			func(v Vocab) bool { return !v.AddBOS && !v.AddSpacePrefix && v.Pre == "smollm" && len(v.Merges) == 1 }, nil},
		{"signed -1 id", func(m map[string]any) { m[keyPAD] = int32(-1) }, func(v Vocab) bool { return v.PAD == -1 }, nil},
		{"template", func(m map[string]any) { m[keyChatTemplate] = "<|im_start|>" },
			func(v Vocab) bool { return v.ChatTemplate == "<|im_start|>" }, nil},
		{"eot and eom", func(m map[string]any) { m[keyEOT] = uint32(5); m[keyEOM] = uint32(0xFFFFFFFF) },
			func(v Vocab) bool { return len(v.EOG) == 1 && v.EOG[0] == 5 }, nil},
		{"missing model", func(m map[string]any) { delete(m, keyModel) }, nil, ErrInvalidVocab},
		{"missing tokens", func(m map[string]any) { delete(m, keyTokens) }, nil, ErrInvalidVocab},
		{"tokens not strings", func(m map[string]any) { m[keyTokens] = []int32{1, 2} }, nil, ErrInvalidVocab},
		{"types not ints", func(m map[string]any) { m[keyTypes] = []string{"x"} }, nil, ErrInvalidVocab},
		{"type overflows int32", func(m map[string]any) { m[keyTypes] = []int64{1 << 40} }, nil, ErrInvalidVocab},
		{"id is a string", func(m map[string]any) { m[keyBOS] = "one" }, nil, ErrInvalidVocab},
		{"negative id", func(m map[string]any) { m[keyEOS] = int32(-7) }, nil, ErrInvalidVocab},
		{"flag not bool", func(m map[string]any) { m[keyAddBOS] = "yes" }, nil, ErrInvalidVocab},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := spmMeta()
			tt.edit(m)
			v, err := VocabFromGGUF(buildGGUF(t, m))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && !tt.check(v) {
				t.Errorf("unexpected vocab: model %q pre %q bos %d eos %d pad %d addBOS %v addEOS %v prefix %v",
					v.Model, v.Pre, v.BOS, v.EOS, v.PAD, v.AddBOS, v.AddEOS, v.AddSpacePrefix)
			}
		})
	}
}

func TestFromGGUFOutOfRangeID(t *testing.T) {
	for _, key := range []string{keyBOS, keyEOT} {
		m := spmMeta()
		m[key] = uint32(100000)
		if _, err := FromGGUF(buildGGUF(t, m)); !errors.Is(err, ErrInvalidVocab) {
			t.Fatalf("%s out of range: err = %v, want ErrInvalidVocab", key, err)
		}
	}
	m := spmMeta()
	m[keyEOT] = uint32(5)
	if tok, err := FromGGUF(buildGGUF(t, m)); err != nil || !tok.IsEOG(5) || tok.IsEOG(6) {
		t.Fatalf("eot_token_id 5: err %v, IsEOG(5) must be true and IsEOG(6) false", err)
	}
	tok, err := FromGGUF(buildGGUF(t, spmMeta()))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Decode(tok.Encode("abc", EncodeOptions{AddBOS: tok.AddBOS()}), SkipSpecial()); got != "abc" {
		t.Errorf("round trip = %q", got)
	}
}
