package gguf

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/kernels/quant"
)

// modelPath returns $TANDEM_MODEL or skips: the default model is fetched by
// scripts/fetch-model.sh (make model), not checked in.
func modelPath(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("TANDEM_MODEL")
	if p == "" {
		tb.Skip("TANDEM_MODEL is not set: run `make model` and set TANDEM_MODEL to the SmolLM2 GGUF to test against the real model")
	}
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("TANDEM_MODEL=%s is not readable (%v): run `make model`", p, err)
	}
	return p
}

// rssBytes reads this process's resident set size from /proc (Linux only).
func rssBytes(tb testing.TB) (uint64, bool) {
	tb.Helper()
	fh, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

type modelSample struct {
	TensorCount int `json:"tensor_count"`
	KVCount     int `json:"kv_count"`
	Metadata    map[string]any
	TokenCount  int      `json:"token_count"`
	TokensHead  []string `json:"tokens_head"`
	Tensors     []struct {
		Name     string
		Dims     []uint64
		Type     string
		Head     []float32
		Row1Head []float32 `json:"row1_head"`
		Sum      float64
		SumSq    float64 `json:"sum_sq"`
	}
}

// TestDefaultModel checks the reader against gguf-py's view of the real
// SmolLM2 file (testdata/gguf/smollm2.json, from gen-quant-fixtures.py).
func TestDefaultModel(t *testing.T) {
	path := modelPath(t)
	rssBefore, haveRSS := rssBytes(t)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if rssAfter, ok := rssBytes(t); haveRSS && ok {
		// Open must not read the tensor data: the file is 98 MB, the
		// metadata a few MB of decoded tokenizer arrays.
		delta := int64(rssAfter) - int64(rssBefore)
		t.Logf("Open: RSS grew by %.1f MiB for a %.1f MiB file", float64(delta)/(1<<20), float64(f.Size())/(1<<20))
		if delta > 48<<20 {
			t.Errorf("Open grew RSS by %d bytes: tensor data is being read eagerly", delta)
		}
	}

	var want modelSample
	js, err := os.ReadFile(filepath.Join(goldenDir, "smollm2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != 272 || len(f.Tensors) != want.TensorCount || len(f.KV) != want.KVCount {
		t.Errorf("%d tensors, %d metadata pairs; want 272 (gguf-py %d), %d", len(f.Tensors), len(f.KV), want.TensorCount, want.KVCount)
	}
	for key, w := range want.Metadata {
		v, err := f.Lookup(key)
		if err != nil {
			t.Error(err)
			continue
		}
		if diff := cmp.Diff(w, jsonNumber(t, v.Raw())); diff != "" {
			t.Errorf("%s (-gguf-py +got):\n%s", key, diff)
		}
	}
	if n, _ := f.Uint("llama.block_count"); n != 30 {
		t.Errorf("llama.block_count = %d, want 30", n)
	}
	if s, _ := f.String("tokenizer.ggml.pre"); s != "smollm" {
		t.Errorf("tokenizer.ggml.pre = %q, want smollm", s)
	}
	tokens, err := f.RequireStrings("tokenizer.ggml.tokens")
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != want.TokenCount || !cmp.Equal(tokens[:len(want.TokensHead)], want.TokensHead) {
		t.Errorf("%d tokens starting %q; gguf-py %d starting %q", len(tokens), tokens[:5], want.TokenCount, want.TokensHead)
	}

	for _, w := range want.Tensors {
		ti, data, err := f.TensorByName(w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(ti.Dims, w.Dims) || ti.Type.String() != w.Type {
			t.Errorf("%s: %v %v, gguf-py %v %s", w.Name, ti.Dims, ti.Type, w.Dims, w.Type)
			continue
		}
		y := make([]float32, ti.Elements())
		if err := quant.Dequantize(ti.Type, data, y); err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(y[:len(w.Head)], w.Head) {
			t.Errorf("%s: first values %v, gguf-py %v", w.Name, y[:len(w.Head)], w.Head)
		}
		if r := ti.RowLen(); len(w.Row1Head) > 0 && !cmp.Equal(y[r:r+uint64(len(w.Row1Head))], w.Row1Head) {
			t.Errorf("%s: row 1 starts %v, gguf-py %v", w.Name, y[r:r+8], w.Row1Head)
		}
		var sum, sumSq float64
		for _, v := range y {
			sum += float64(v)
			sumSq += float64(v) * float64(v)
		}
		if math.Abs(sum-w.Sum) > 1e-9*math.Max(1, sumSq) || math.Abs(sumSq-w.SumSq) > 1e-9*sumSq {
			t.Errorf("%s: sum %v sum² %v, gguf-py %v %v", w.Name, sum, sumSq, w.Sum, w.SumSq)
		}
	}

	// Every tensor decodes, one row at a time to keep memory flat.
	for _, ti := range f.Tensors {
		data := f.TensorData(ti)
		row := make([]float32, ti.RowLen())
		rb := ti.Type.RowBytes(len(row))
		if rb < 0 || uint64(rb)*ti.Rows() != ti.Size {
			t.Fatalf("%s: row bytes %d x %d rows != size %d", ti.Name, rb, ti.Rows(), ti.Size)
		}
		for r := 0; r < int(ti.Rows()); r++ {
			if err := quant.Dequantize(ti.Type, data[r*rb:(r+1)*rb], row); err != nil {
				t.Fatalf("%s row %d: %v", ti.Name, r, err)
			}
		}
	}
}

// BenchmarkOpen measures Open+Close of the default model: with mmap it
// costs the metadata parse (tokenizer arrays), not the 98 MB of weights.
func BenchmarkOpen(b *testing.B) {
	path := modelPath(b)
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStoriesModel reads the small SentencePiece-vocabulary Llama kept
// beside the project (../shared/models), a file written by a different
// converter than SmolLM2's.
func TestStoriesModel(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "models", "stories260K.gguf")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not found (%v): it lives outside the repository; skipping", path, err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 48 {
		t.Errorf("%d tensors, want 48", len(f.Tensors))
	}
	if s, _ := f.String("tokenizer.ggml.model"); s != "llama" {
		t.Errorf("tokenizer.ggml.model = %q, want llama", s)
	}
	scores, ok := f.Floats("tokenizer.ggml.scores")
	types, ok2 := f.Ints("tokenizer.ggml.token_type")
	if !ok || !ok2 || len(scores) != 512 || len(types) != 512 {
		t.Errorf("scores %d (%v), token types %d (%v); want 512 each", len(scores), ok, len(types), ok2)
	}
	if n, _ := f.Uint("llama.embedding_length"); n != 64 {
		t.Errorf("llama.embedding_length = %d, want 64", n)
	}
	emb, data, err := f.TensorByName("token_embd.weight")
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(emb.Dims, []uint64{64, 512}) || emb.Type != quant.F32 || len(data) != 64*512*4 {
		t.Errorf("token_embd.weight: %v %v, %d bytes", emb.Dims, emb.Type, len(data))
	}
}
