package gguf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/kernels/quant"
)

type kvView struct {
	Key  string
	Type ValueType
	Elem ValueType
	Raw  any
}

func viewKVs(kvs []KV) []kvView {
	out := make([]kvView, len(kvs))
	for i, kv := range kvs {
		out[i] = kvView{kv.Key, kv.Value.Type(), kv.Value.ElemType(), kv.Value.Raw()}
	}
	return out
}

func checkRoundTrip(t *testing.T, f *File, kvs []KV, ts []WriteTensor) {
	t.Helper()
	if f.Version != 3 {
		t.Errorf("Version = %d, want 3", f.Version)
	}
	if diff := cmp.Diff(viewKVs(kvs), viewKVs(f.KV)); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	if len(f.Tensors) != len(ts) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(ts))
	}
	for i, w := range ts {
		got, ok := f.Tensor(w.Name)
		if !ok {
			t.Fatalf("tensor %q missing", w.Name)
		}
		if got.Name != f.Tensors[i].Name {
			t.Errorf("tensor %d is %q, want %q (file order)", i, f.Tensors[i].Name, w.Name)
		}
		want := TensorInfo{Name: w.Name, Dims: w.Dims, Type: w.Type, Offset: got.Offset, Size: uint64(len(w.Data))}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tensor %q (-want +got):\n%s", w.Name, diff)
		}
		if got.Offset%f.Alignment != 0 {
			t.Errorf("tensor %q offset %d not aligned to %d", w.Name, got.Offset, f.Alignment)
		}
		if !bytes.Equal(f.TensorData(got), w.Data) {
			t.Errorf("tensor %q data differs", w.Name)
		}
	}
}

func TestWriteParseRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		align uint32 // 0: default
	}{{"default alignment", 0}, {"alignment 64", 64}, {"alignment 1", 1}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kvs := sampleKVs(t)
			if tt.align != 0 {
				kvs = append(kvs, KV{KeyAlignment, mustValue(t, tt.align)})
			}
			ts := sampleTensors(t)
			data := writeBytes(t, kvs, ts)
			f, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			want := uint64(DefaultAlignment)
			if tt.align != 0 {
				want = uint64(tt.align)
			}
			if f.Alignment != want || f.DataOffset%want != 0 {
				t.Errorf("Alignment %d, DataOffset %d; want alignment %d", f.Alignment, f.DataOffset, want)
			}
			checkRoundTrip(t, f, kvs, ts)
		})
	}
}

func TestOpenMmap(t *testing.T) {
	kvs, ts := sampleKVs(t), sampleTensors(t)
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, writeBytes(t, kvs, ts), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, f, kvs, ts)
	tn, _ := f.Tensor("half")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if f.TensorData(tn) != nil {
		t.Error("TensorData after Close is not nil")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.gguf")
	if err := os.WriteFile(small, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.gguf")
	if err := os.WriteFile(bad, new(raw).header(1, 0, 0).Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), os.ErrNotExist},
		{"smaller than a header", small, ErrTruncated},
		{"version 1", bad, ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Open(tt.path)
			if !errors.Is(err, tt.want) {
				t.Errorf("Open: %v, want %v", err, tt.want)
			}
			if f != nil {
				t.Error("Open returned a File with an error")
			}
		})
	}
}

func TestParseV2(t *testing.T) {
	// Version 2 has the same layout as 3.
	data := writeBytes(t, sampleKVs(t), sampleTensors(t))
	data[4] = 2
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 {
		t.Errorf("Version = %d", f.Version)
	}
}

func TestGetters(t *testing.T) {
	f, err := Parse(writeBytes(t, sampleKVs(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := f.String("general.architecture"); !ok || s != "llama" {
		t.Errorf("String = %q, %v", s, ok)
	}
	uints := []struct {
		key  string
		want uint64
		ok   bool
	}{
		{"test.u8", 200, true}, {"test.u16", 60000, true}, {"test.u32", 4000000000, true},
		{"test.u64", 1 << 63, true}, {"test.i8", 0, false}, {"test.f32", 0, false},
		{"test.arr.u32", 0, false}, {"missing", 0, false},
	}
	for _, u := range uints {
		if got, ok := f.Uint(u.key); got != u.want || ok != u.ok {
			t.Errorf("Uint(%q) = %d, %v; want %d, %v", u.key, got, ok, u.want, u.ok)
		}
	}
	ints := []struct {
		key  string
		want int64
		ok   bool
	}{
		{"test.i8", -100, true}, {"test.i16", -30000, true}, {"test.i32", -2000000000, true},
		{"test.i64", -1 << 62, true}, {"test.u32", 4000000000, true}, {"test.u64", 0, false},
	}
	for _, i := range ints {
		if got, ok := f.Int(i.key); got != i.want || ok != i.ok {
			t.Errorf("Int(%q) = %d, %v; want %d, %v", i.key, got, ok, i.want, i.ok)
		}
	}
	if v, ok := f.Float("test.f32"); !ok || float32(v) != 1e-5 {
		t.Errorf("Float(f32) = %v, %v", v, ok)
	}
	if v, ok := f.Float("test.u8"); !ok || v != 200 {
		t.Errorf("Float(u8) = %v, %v", v, ok)
	}
	if v, ok := f.Bool("test.bool"); !ok || !v {
		t.Errorf("Bool = %v, %v", v, ok)
	}
	if v, ok := f.Strings("test.arr.string"); !ok || !cmp.Equal(v, []string{"a", "", "b c"}) {
		t.Errorf("Strings = %q, %v", v, ok)
	}
	if v, ok := f.Ints("test.arr.i32"); !ok || !cmp.Equal(v, []int64{3, 3, 1, 3}) {
		t.Errorf("Ints = %v, %v", v, ok)
	}
	if v, ok := f.Ints("test.arr.u8"); !ok || !cmp.Equal(v, []int64{1, 2, 255}) {
		t.Errorf("Ints(u8) = %v, %v", v, ok)
	}
	if _, ok := f.Ints("test.arr.f32"); ok {
		t.Error("Ints accepted a float array")
	}
	if v, ok := f.Floats("test.arr.f64"); !ok || !cmp.Equal(v, []float32{1e30}) {
		t.Errorf("Floats(f64) = %v, %v", v, ok)
	}
	if a, ok := f.Array("test.arr.bool"); !ok || a.Len() != 2 || a.ElemType() != TypeBool {
		t.Errorf("Array = %v, %v", a, ok)
	}
	if _, ok := f.Array("test.u8"); ok {
		t.Error("Array accepted a scalar")
	}
	if _, err := f.RequireUint("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RequireUint(missing): %v", err)
	}
	if _, err := f.RequireString("test.u8"); !errors.Is(err, ErrValueType) {
		t.Errorf("RequireString(u8): %v", err)
	}
	if _, err := f.RequireFloat("test.f64"); err != nil {
		t.Errorf("RequireFloat: %v", err)
	}
	if got := f.Keys(); len(got) != len(f.KV) || got[0] != "general.architecture" {
		t.Errorf("Keys = %v", got)
	}
	if _, _, err := f.TensorByName("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TensorByName: %v", err)
	}
}

func TestNewValue(t *testing.T) {
	tests := []struct {
		in       any
		wantType ValueType
		wantErr  error
	}{
		{uint8(1), TypeUint8, nil},
		{7, TypeInt64, nil},
		{[]int{1, 2}, TypeArray, nil},
		{"s", TypeString, nil},
		{[]string{"x"}, TypeArray, nil},
		{struct{}{}, 0, ErrValueType},
		{[][]int32{{1}}, 0, ErrValueType},
		{nil, 0, ErrValueType},
	}
	for _, tt := range tests {
		v, err := NewValue(tt.in)
		if !errors.Is(err, tt.wantErr) || (err == nil && v.Type() != tt.wantType) {
			t.Errorf("NewValue(%#v) = %v, %v; want type %v, err %v", tt.in, v.Type(), err, tt.wantType, tt.wantErr)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	good := sampleTensors(t)[:1]
	tests := []struct {
		name    string
		kvs     []KV
		tensors []WriteTensor
		want    error
	}{
		{"zero value", []KV{{Key: "k"}}, nil, ErrValueType},
		{"duplicate key", []KV{{"k", mustValue(t, 1)}, {"k", mustValue(t, 2)}}, nil, ErrInvalid},
		{"empty key", []KV{{"", mustValue(t, 1)}}, nil, ErrInvalid},
		{"alignment 3", []KV{{KeyAlignment, mustValue(t, uint32(3))}}, nil, ErrInvalid},
		{"alignment string", []KV{{KeyAlignment, mustValue(t, "32")}}, nil, ErrInvalid},
		{"64-byte name (ggml's limit is 63)", nil, []WriteTensor{{Name: strings.Repeat("n", 64), Dims: []uint64{1}, Type: quant.F32, Data: make([]byte, 4)}}, ErrInvalid},
		{"duplicate name", nil, append(good, good[0]), ErrInvalid},
		{"five dims", nil, []WriteTensor{{Name: "t", Dims: []uint64{1, 1, 1, 1, 1}, Type: quant.F32, Data: make([]byte, 4)}}, ErrInvalid},
		{"unknown type", nil, []WriteTensor{{Name: "t", Dims: []uint64{1}, Type: quant.Type(99), Data: make([]byte, 4)}}, ErrUnknownType},
		{"partial block", nil, []WriteTensor{{Name: "t", Dims: []uint64{16}, Type: quant.Q4_0, Data: make([]byte, 9)}}, ErrInvalid},
		{"short data", nil, []WriteTensor{{Name: "t", Dims: []uint64{2}, Type: quant.F32, Data: make([]byte, 4)}}, ErrInvalid},
		{"dims overflow", nil, []WriteTensor{{Name: "t", Dims: []uint64{1 << 32, 1 << 32}, Type: quant.F32}}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tt.kvs, tt.tensors); !errors.Is(err, tt.want) {
				t.Errorf("Write: %v, want %v", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Errorf("Write wrote %d bytes before failing", buf.Len())
			}
		})
	}
}

type failWriter struct{ left int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n := w.left
		w.left = 0
		return n, errors.New("disk full")
	}
	w.left -= len(p)
	return len(p), nil
}

func TestWriteIOError(t *testing.T) {
	err := Write(&failWriter{left: 100}, sampleKVs(t), sampleTensors(t))
	if err == nil || err.Error() != "gguf: write: disk full" {
		t.Errorf("Write to a failing writer: %v", err)
	}
}

// A File is read-only after Parse: concurrent readers need no locking (run
// with -race).
func TestConcurrentReaders(t *testing.T) {
	ts := sampleTensors(t)
	f, err := Parse(writeBytes(t, sampleKVs(t), ts))
	if err != nil {
		t.Fatal(err)
	}
	const readers = 4
	errs := make(chan error, readers)
	for range readers {
		go func() {
			for _, w := range ts {
				ti, data, err := f.TensorByName(w.Name)
				if err != nil || ti.Size != uint64(len(w.Data)) || !bytes.Equal(data, w.Data) {
					errs <- errors.New("tensor " + w.Name + " read back wrong")
					return
				}
			}
			if s, ok := f.Strings("test.arr.string"); !ok || len(s) != 3 {
				errs <- errors.New("Strings read back wrong")
				return
			}
			errs <- nil
		}()
	}
	for range readers { // joins every reader
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
