package tokenizer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// readGGUFMeta is a minimal GGUF key/value reader for tests, so the
// tokenizer's tests do not depend on the project's GGUF package. It reads
// only the header and metadata, never tensor data.
func readGGUFMeta(path string) (map[string]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr struct {
		Magic   [4]byte
		Version uint32
		Tensors uint64
		KVs     uint64
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return nil, err
	}
	if string(hdr.Magic[:]) != "GGUF" || hdr.Version < 2 || hdr.Version > 3 {
		return nil, errors.New("not a GGUF v2/v3 file")
	}
	meta := make(map[string]any, hdr.KVs)
	for i := uint64(0); i < hdr.KVs; i++ {
		key, err := readGGUFString(r)
		if err != nil {
			return nil, err
		}
		var typ uint32
		if err := binary.Read(r, binary.LittleEndian, &typ); err != nil {
			return nil, err
		}
		v, err := readGGUFValue(r, typ)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", key, err)
		}
		meta[key] = v
	}
	return meta, nil
}

func readGGUFString(r io.Reader) (string, error) {
	var n uint64
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return "", err
	}
	if n > 1<<24 {
		return "", errors.New("string too long")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return string(b), err
}

func readGGUFValue(r io.Reader, typ uint32) (any, error) {
	le := binary.LittleEndian
	switch typ {
	case 0, 1, 7: // u8, i8, bool
		var v uint8
		err := binary.Read(r, le, &v)
		if typ == 7 {
			return v != 0, err
		}
		return int64(v), err
	case 2, 3:
		var v uint16
		err := binary.Read(r, le, &v)
		return int64(v), err
	case 4:
		var v uint32
		err := binary.Read(r, le, &v)
		return int64(v), err
	case 5:
		var v int32
		err := binary.Read(r, le, &v)
		return int64(v), err
	case 6:
		var v uint32
		err := binary.Read(r, le, &v)
		return float64(math.Float32frombits(v)), err
	case 8:
		return readGGUFString(r)
	case 10, 11:
		var v int64
		err := binary.Read(r, le, &v)
		return v, err
	case 12:
		var v float64
		err := binary.Read(r, le, &v)
		return v, err
	case 9:
		var et uint32
		var n uint64
		if err := binary.Read(r, le, &et); err != nil {
			return nil, err
		}
		if err := binary.Read(r, le, &n); err != nil {
			return nil, err
		}
		if n > 1<<24 {
			return nil, errors.New("array too long")
		}
		out := make([]any, n)
		for i := range out {
			v, err := readGGUFValue(r, et)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown value type %d", typ)
}

// vocabFromMeta converts GGUF metadata to a Vocab with llama.cpp's
// defaults: SentencePiece vocabularies add BOS and a space prefix unless the
// file says otherwise; ids of u32 max mean "absent".
func vocabFromMeta(meta map[string]any) Vocab {
	str := func(k string) string { s, _ := meta[k].(string); return s }
	id := func(k string) int32 {
		v, ok := meta[k].(int64)
		if !ok || v < 0 || v >= math.MaxInt32 {
			return -1
		}
		return int32(v)
	}
	flag := func(k string, def bool) bool {
		if b, ok := meta[k].(bool); ok {
			return b
		}
		return def
	}
	v := Vocab{
		Model:        str("tokenizer.ggml.model"),
		Pre:          str("tokenizer.ggml.pre"),
		BOS:          id("tokenizer.ggml.bos_token_id"),
		EOS:          id("tokenizer.ggml.eos_token_id"),
		UNK:          id("tokenizer.ggml.unknown_token_id"),
		PAD:          id("tokenizer.ggml.padding_token_id"),
		ChatTemplate: str("tokenizer.chat_template"),
	}
	spm := v.Model == "llama"
	v.AddBOS = flag("tokenizer.ggml.add_bos_token", spm)
	v.AddEOS = flag("tokenizer.ggml.add_eos_token", false)
	v.AddSpacePrefix = flag("tokenizer.ggml.add_space_prefix", spm)
	arr, _ := meta["tokenizer.ggml.tokens"].([]any)
	for _, x := range arr {
		s, _ := x.(string)
		v.Tokens = append(v.Tokens, s)
	}
	arr, _ = meta["tokenizer.ggml.token_type"].([]any)
	for _, x := range arr {
		n, _ := x.(int64)
		v.Types = append(v.Types, int32(n))
	}
	arr, _ = meta["tokenizer.ggml.scores"].([]any)
	for _, x := range arr {
		f, _ := x.(float64)
		v.Scores = append(v.Scores, float32(f))
	}
	arr, _ = meta["tokenizer.ggml.merges"].([]any)
	for _, x := range arr {
		s, _ := x.(string)
		v.Merges = append(v.Merges, s)
	}
	return v
}

// Model locations: SmolLM2 through TANDEM_MODEL, stories260K beside the
// project.
func smolLM2Path() string { return os.Getenv("TANDEM_MODEL") }

func storiesPath() string {
	return filepath.Join("..", "..", "..", "shared", "models", "stories260K.gguf")
}

// loadTokenizer builds a Tokenizer from a GGUF file, skipping the test when
// the file is absent. Results are cached per test binary run by the caller's
// sync.OnceValues.
func loadTokenizer(tb testing.TB, path, what string) *Tokenizer {
	tb.Helper()
	if path == "" {
		tb.Skipf("%s: set TANDEM_MODEL to the SmolLM2-135M-Instruct GGUF to run this test", what)
	}
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("%s: model file not available (%v)", what, err)
	}
	meta, err := readGGUFMeta(path)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	tok, err := New(vocabFromMeta(meta))
	if err != nil {
		tb.Fatalf("New(%s): %v", path, err)
	}
	return tok
}
