package tokenizer

import (
	"fmt"
	"math"

	"github.com/tandemserve/tandem/model/gguf"
)

// GGUF metadata keys the tokenizer reads (llama.cpp's names).
const (
	keyModel          = "tokenizer.ggml.model"
	keyPre            = "tokenizer.ggml.pre"
	keyTokens         = "tokenizer.ggml.tokens"
	keyTypes          = "tokenizer.ggml.token_type"
	keyScores         = "tokenizer.ggml.scores"
	keyMerges         = "tokenizer.ggml.merges"
	keyBOS            = "tokenizer.ggml.bos_token_id"
	keyEOS            = "tokenizer.ggml.eos_token_id"
	keyUNK            = "tokenizer.ggml.unknown_token_id"
	keyPAD            = "tokenizer.ggml.padding_token_id"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyChatTemplate   = "tokenizer.chat_template"
	keyEOT            = "tokenizer.ggml.eot_token_id"
	keyEOM            = "tokenizer.ggml.eom_token_id"
)

// FromGGUF builds the tokenizer a GGUF file describes. The file may be
// closed afterwards: the tokenizer keeps copies of what it needs.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	v, err := VocabFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// VocabFromGGUF reads the tokenizer metadata of a GGUF file, applying
// llama.cpp's defaults for keys older files lack: SentencePiece ("llama")
// vocabularies add BOS and a space prefix, byte-level ones do neither.
func VocabFromGGUF(f *gguf.File) (Vocab, error) {
	var v Vocab
	var err error
	if v.Model, err = f.RequireString(keyModel); err != nil {
		return Vocab{}, fmt.Errorf("%w: %w", ErrInvalidVocab, err)
	}
	if v.Tokens, err = f.RequireStrings(keyTokens); err != nil {
		return Vocab{}, fmt.Errorf("%w: %w", ErrInvalidVocab, err)
	}
	v.Pre, err = optional(f, keyPre, gguf.Value.Str)
	if err != nil {
		return Vocab{}, err
	}
	if v.Types, err = optionalInt32s(f, keyTypes); err != nil {
		return Vocab{}, err
	}
	if v.Scores, err = optional(f, keyScores, gguf.Value.Floats); err != nil {
		return Vocab{}, err
	}
	if v.Merges, err = optional(f, keyMerges, gguf.Value.Strings); err != nil {
		return Vocab{}, err
	}
	if v.ChatTemplate, err = optional(f, keyChatTemplate, gguf.Value.Str); err != nil {
		return Vocab{}, err
	}
	for _, id := range []struct {
		key string
		dst *int32
	}{{keyBOS, &v.BOS}, {keyEOS, &v.EOS}, {keyUNK, &v.UNK}, {keyPAD, &v.PAD}} {
		if *id.dst, err = tokenID(f, id.key); err != nil {
			return Vocab{}, err
		}
	}
	for _, key := range []string{keyEOT, keyEOM} {
		id, err := tokenID(f, key)
		if err != nil {
			return Vocab{}, err
		}
		if id >= 0 {
			v.EOG = append(v.EOG, id)
		}
	}
	spm := v.Model == "llama"
	for _, b := range []struct {
		key string
		def bool
		dst *bool
	}{{keyAddBOS, spm, &v.AddBOS}, {keyAddEOS, false, &v.AddEOS}, {keyAddSpacePrefix, spm, &v.AddSpacePrefix}} {
		val, err := optional(f, b.key, gguf.Value.Bool)
		if err != nil {
			return Vocab{}, err
		}
		*b.dst = b.def
		if _, ok := f.Value(b.key); ok {
			*b.dst = val
		}
	}
	return v, nil
}

// optional reads key with as, returning the zero value when it is absent
// and an error when it holds the wrong type.
func optional[T any](f *gguf.File, key string, as func(gguf.Value) (T, error)) (T, error) {
	var zero T
	val, ok := f.Value(key)
	if !ok {
		return zero, nil
	}
	x, err := as(val)
	if err != nil {
		return zero, fmt.Errorf("%w: key %s: %w", ErrInvalidVocab, key, err)
	}
	return x, nil
}

func optionalInt32s(f *gguf.File, key string) ([]int32, error) {
	wide, err := optional(f, key, gguf.Value.Ints)
	if err != nil {
		return nil, err
	}
	out := make([]int32, len(wide))
	for i, x := range wide {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("%w: key %s element %d = %d", ErrInvalidVocab, key, i, x)
		}
		out[i] = int32(x)
	}
	return out, nil
}

// tokenID reads a special-token id: -1 when absent or stored as -1 / u32
// max (the converters' "none"); New checks the range of others.
func tokenID(f *gguf.File, key string) (int32, error) {
	val, ok := f.Value(key)
	if !ok {
		return -1, nil
	}
	n, err := val.Int()
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w: key %s: %w", ErrInvalidVocab, key, err)
	case n == -1 || n == math.MaxUint32:
		return -1, nil
	case n < 0 || n > math.MaxInt32:
		return 0, fmt.Errorf("%w: key %s = %d", ErrInvalidVocab, key, n)
	}
	return int32(n), nil
}
