package gguf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzParse seeds")

// FuzzParse checks that Parse never panics, reports only this package's
// errors, keeps allocation proportional to the input, and that whatever it
// accepts survives a Write/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, seed := range corpusSeeds(f) {
		f.Add(seed.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		file, err := Parse(data)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > allocBound(len(data)) {
			t.Fatalf("Parse of %d bytes allocated %d bytes", len(data), got)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("Parse error %v wraps no sentinel", err)
			}
			return
		}
		ts := make([]WriteTensor, len(file.Tensors))
		for i, ti := range file.Tensors {
			d := file.TensorData(ti)
			if uint64(len(d)) != ti.Size {
				t.Fatalf("tensor %q: %d bytes of data, size %d", ti.Name, len(d), ti.Size)
			}
			ts[i] = WriteTensor{Name: ti.Name, Dims: ti.Dims, Type: ti.Type, Data: d}
		}
		var buf bytes.Buffer
		err = Write(&buf, file.KV, ts)
		for _, ti := range ts {
			if len(ti.Name) > MaxWriteNameLen {
				// Parse takes 64-byte names, Write holds ggml's limit.
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Write of a %d-byte name: %v, want ErrInvalid", len(ti.Name), err)
				}
				return
			}
		}
		if err != nil {
			t.Fatalf("Write of a parsed file: %v", err)
		}
		again, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("Parse of rewritten file: %v", err)
		}
		if diff := cmp.Diff(viewKVs(file.KV), viewKVs(again.KV), cmp.Comparer(sameNaN), cmp.Comparer(sameNaN32)); diff != "" {
			t.Fatalf("metadata changed in round trip (-first +second):\n%s", diff)
		}
		for i, ti := range again.Tensors {
			if ti.Name != ts[i].Name || !cmp.Equal(ti.Dims, ts[i].Dims) || ti.Type != ts[i].Type || !bytes.Equal(again.TensorData(ti), ts[i].Data) {
				t.Fatalf("tensor %d changed in round trip", i)
			}
		}
	})
}

// sameNaN compares float64 metadata treating NaN as equal to NaN.
func sameNaN(a, b float64) bool { return a == b || (a != a && b != b) }

// sameNaN32 is sameNaN for float32 arrays.
func sameNaN32(a, b float32) bool { return a == b || (a != a && b != b) }

type seed struct {
	name string
	data []byte
}

// corpusSeeds are valid files, truncations of one and the hostile cases.
func corpusSeeds(tb testing.TB) []seed {
	valid := writeBytes(tb, sampleKVs(tb), sampleTensors(tb))
	seeds := []seed{
		{"valid", valid},
		{"valid_v2", append([]byte(valid[:4:4]), append([]byte{2}, valid[5:]...)...)},
		{"no_tensors", writeBytes(tb, sampleKVs(tb)[:3], nil)},
		{"empty_file", writeBytes(tb, nil, nil)},
		{"aligned_64", writeBytes(tb, []KV{{KeyAlignment, mustValue(tb, uint32(64))}}, sampleTensors(tb)[1:3])},
	}
	for _, n := range []int{3, 20, 100, 1000, len(valid) - 40} {
		seeds = append(seeds, seed{fmt.Sprintf("truncated_%d", n), valid[:n]})
	}
	for _, h := range hostileInputs() {
		seeds = append(seeds, seed{strings.ReplaceAll(h.name, " ", "_"), h.data})
	}
	return seeds
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzParse with
// -update-corpus and otherwise checks the checked-in seeds are current.
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	for _, s := range corpusSeeds(t) {
		path := filepath.Join(dir, s.name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.data)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (err %v): run go test ./model/gguf -run TestWriteFuzzCorpus -update-corpus", path, err)
		}
	}
}
