package cpu

import (
	"errors"
	"slices"
	"testing"
	"unsafe"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"default", DefaultConfig(), true},
		{"one thread generic", Config{Threads: 1, MaxLevel: LevelGeneric}, true},
		{"zero threads", Config{Threads: 0, MaxLevel: LevelAVX512}, false},
		{"too many threads", Config{Threads: maxThreads + 1, MaxLevel: LevelAVX512}, false},
		{"bad level", Config{Threads: 1, MaxLevel: 7}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v is not ErrInvalidConfig", err)
			}
			if _, err := New(c.cfg, nil); err == nil && !c.ok {
				t.Errorf("New accepted an invalid config")
			}
		})
	}
}

func TestNewWeightValidates(t *testing.T) {
	b := newBackend(t, Config{Threads: 1, MaxLevel: LevelAVX512})
	cases := []struct {
		name       string
		typ        quant.Type
		rows, cols int
		n          int
		want       error
	}{
		{"q4_1 ok", quant.Q4_1, 3, 64, 3 * 40, nil},
		{"f32 odd cols ok", quant.F32, 2, 5, 40, nil},
		{"short data", quant.Q4_1, 3, 64, 3*40 - 1, ErrInvalidWeight},
		{"long data", quant.Q8_0, 1, 32, 35, ErrInvalidWeight},
		{"cols not whole blocks", quant.Q4_0, 1, 48, 27, ErrInvalidWeight},
		{"k-quant partial superblock", quant.Q6_K, 1, 128, 105, ErrInvalidWeight},
		{"zero rows", quant.F16, 0, 8, 0, ErrInvalidWeight},
		{"negative cols", quant.F16, 1, -8, 0, ErrInvalidWeight},
		{"activation-only type", quant.Q8_K, 1, 256, 292, ErrUnsupportedType},
		{"unknown type", quant.Type(99), 1, 32, 32, ErrUnsupportedType},
		{"overflowing shape", quant.F32, 1 << 40, 1 << 30, 0, ErrInvalidWeight},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := b.NewWeight(c.typ, c.rows, c.cols, make([]byte, c.n))
			if !errors.Is(err, c.want) {
				t.Fatalf("NewWeight error = %v, want %v", err, c.want)
			}
			if err == nil && (w.Rows() != c.rows || w.Cols() != c.cols || w.Type() != c.typ) {
				t.Errorf("weight %v %dx%d, want %v %dx%d", w.Type(), w.Rows(), w.Cols(), c.typ, c.rows, c.cols)
			}
		})
	}
}

// TestNewWeightDoesNotCopy checks that the weight aliases the caller's bytes
// (the GGUF mmap), as the Backend contract allows and memory use needs.
func TestNewWeightDoesNotCopy(t *testing.T) {
	b := newBackend(t, Config{Threads: 1, MaxLevel: LevelAVX512})
	data := make([]byte, 34)
	w, err := b.NewWeight(quant.Q8_0, 1, 32, data)
	if err != nil {
		t.Fatal(err)
	}
	if got := w.(*weight).data; unsafe.SliceData(got) != unsafe.SliceData(data) {
		t.Error("NewWeight copied its data")
	}
}

func TestTensorRoundTrip(t *testing.T) {
	b := newBackend(t, Config{Threads: 1, MaxLevel: LevelAVX512})
	src := []float32{1, 2, 3, 4, 5, 6}
	x := b.NewTensor(2, 3)
	if x.Rows() != 2 || x.Cols() != 3 {
		t.Fatalf("shape %dx%d", x.Rows(), x.Cols())
	}
	if got := readAll(b, x); !slices.Equal(got, make([]float32, 6)) {
		t.Errorf("new tensor not zero: %v", got)
	}
	b.Write(x, src)
	if got := readAll(b, x); !slices.Equal(got, src) {
		t.Errorf("Read = %v, want %v", got, src)
	}
}

func TestCloseIsIdempotentAndNamed(t *testing.T) {
	b, err := New(Config{Threads: 4, MaxLevel: LevelAVX512}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Name() == "" || b.Threads() != 4 {
		t.Errorf("Name %q Threads %d", b.Name(), b.Threads())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("use after Close did not panic")
		}
	}()
	b.Add(b.NewTensor(1, 1), b.NewTensor(1, 1))
}

func TestKVCacheBlocks(t *testing.T) {
	b := newBackend(t, Config{Threads: 1, MaxLevel: LevelAVX512})
	spec := kernels.KVSpec{Layers: 2, Blocks: 5, BlockSize: 4, KVHeads: 2, HeadDim: 8, DType: kernels.KVInt8}
	c, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.Spec() != spec {
		t.Errorf("Spec() = %+v", c.Spec())
	}
	bb := spec.BlockBytes()
	src := make([]byte, bb)
	for i := range src {
		src[i] = byte(i * 7)
	}
	if err := c.WriteBlock(1, 3, src); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, bb)
	if err := c.ReadBlock(1, 3, dst); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dst, src) {
		t.Error("ReadBlock did not return what WriteBlock stored")
	}
	region, ok := c.Region(1)
	if !ok || len(region) != spec.Blocks*bb || !slices.Equal(region[3*bb:4*bb], src) {
		t.Errorf("Region(1): ok=%v len=%d", ok, len(region))
	}
	if _, ok := c.Region(2); ok {
		t.Error("Region(2) of a 2-layer cache is ok")
	}
	errCases := []struct {
		name         string
		layer, block int
		n            int
		want         error
	}{
		{"layer high", 2, 0, bb, ErrBlockRange},
		{"layer negative", -1, 0, bb, ErrBlockRange},
		{"block high", 0, 5, bb, ErrBlockRange},
		{"short buffer", 0, 0, bb - 1, ErrBlockRange},
	}
	for _, ec := range errCases {
		if err := c.ReadBlock(ec.layer, ec.block, make([]byte, ec.n)); !errors.Is(err, ec.want) {
			t.Errorf("ReadBlock %s: %v, want %v", ec.name, err, ec.want)
		}
		if err := c.WriteBlock(ec.layer, ec.block, make([]byte, ec.n)); !errors.Is(err, ec.want) {
			t.Errorf("WriteBlock %s: %v, want %v", ec.name, err, ec.want)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadBlock(0, 0, dst); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadBlock after Close: %v", err)
	}
	if _, err := b.NewKVCache(kernels.KVSpec{Layers: 1}); !errors.Is(err, kernels.ErrInvalidKVSpec) {
		t.Errorf("NewKVCache(invalid) = %v", err)
	}
}
