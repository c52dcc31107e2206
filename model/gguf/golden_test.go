package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/gguf/writer.gguf")

const goldenDir = "../../testdata/gguf"

// jsonNumber widens a Go scalar or slice to what encoding/json decodes the
// same value to, so Go values compare with gguf-py's JSON output.
func jsonNumber(t *testing.T, x any) any {
	t.Helper()
	// float32 must widen exactly (json would print its shortest float32
	// form), and []byte would marshal as base64.
	switch v := x.(type) {
	case float32:
		x = float64(v)
	case []float32:
		w := make([]float64, len(v))
		for i, e := range v {
			w[i] = float64(e)
		}
		x = w
	case []uint8:
		w := make([]int, len(v))
		for i, e := range v {
			w[i] = int(e)
		}
		x = w
	}
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWriterGolden pins Write's output byte for byte and checks that gguf-py
// reads it back as written: testdata/gguf/writer.json is GGUFReader's view of
// writer.gguf, produced by scripts/gen-quant-fixtures.py.
func TestWriterGolden(t *testing.T) {
	kvs, ts := sampleKVs(t), sampleTensors(t)
	data := writeBytes(t, kvs, ts)
	path := filepath.Join(goldenDir, "writer.gguf")
	if *updateGolden {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(golden, data) {
		t.Fatalf("Write output differs from %s (%d vs %d bytes); if intended, rerun with -update-golden and regenerate writer.json", path, len(data), len(golden))
	}

	var py struct {
		Metadata map[string]struct {
			Type  string
			Elem  string
			Value any
		}
		Tensors []struct {
			Name   string
			Dims   []uint64
			Type   string
			Offset uint64
			SHA256 string
		}
	}
	js, err := os.ReadFile(filepath.Join(goldenDir, "writer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &py); err != nil {
		t.Fatal(err)
	}
	if len(py.Metadata) != len(kvs) {
		t.Errorf("gguf-py read %d metadata pairs, wrote %d", len(py.Metadata), len(kvs))
	}
	for _, kv := range kvs {
		got, ok := py.Metadata[kv.Key]
		if !ok {
			t.Errorf("gguf-py did not read key %q", kv.Key)
			continue
		}
		if want := strings.ToUpper(kv.Value.Type().String()); got.Type != want {
			t.Errorf("%s: gguf-py type %s, wrote %s", kv.Key, got.Type, want)
		}
		if kv.Value.Type() == TypeArray && kv.Value.Len() > 0 && got.Elem != strings.ToUpper(kv.Value.ElemType().String()) {
			t.Errorf("%s: gguf-py element type %s, wrote %v", kv.Key, got.Elem, kv.Value.ElemType())
		}
		if diff := cmp.Diff(jsonNumber(t, kv.Value.Raw()), got.Value); diff != "" {
			t.Errorf("%s (-wrote +gguf-py):\n%s", kv.Key, diff)
		}
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(py.Tensors) != len(ts) {
		t.Fatalf("gguf-py read %d tensors, wrote %d", len(py.Tensors), len(ts))
	}
	for i, w := range ts {
		got := py.Tensors[i]
		sum := sha256.Sum256(w.Data)
		ti, _ := f.Tensor(w.Name)
		if got.Name != w.Name || !cmp.Equal(got.Dims, w.Dims) || got.Type != w.Type.String() ||
			got.Offset != f.DataOffset+ti.Offset || got.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("tensor %d: gguf-py read %+v; wrote %s %v %v at %d", i, got, w.Name, w.Dims, w.Type, f.DataOffset+ti.Offset)
		}
	}
}
