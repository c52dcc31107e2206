package gguf

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// oneTensor is a well-formed file with one F32 tensor of n values, built
// with raw so the cases below can vary one field at a time.
func oneTensor(dims []uint64, typ quant.Type, off uint64, dataBytes int) []byte {
	r := new(raw).header(3, 1, 1).kvU32("k", 1).tensor("t", dims, typ, off)
	return r.pad(DefaultAlignment).zeros(dataBytes).Bytes()
}

type hostileCase struct {
	name string
	data []byte
	want error
}

// hostileInputs are malformed files, one defect each; they also seed
// FuzzParse's corpus.
func hostileInputs() []hostileCase {
	return []hostileCase{
		{"empty", nil, ErrTruncated},
		{"bad magic", []byte("GGML\x03\x00\x00\x00" + string(make([]byte, 16))), ErrInvalid},
		{"version 1", new(raw).header(1, 0, 0).Bytes(), ErrUnsupportedVersion},
		{"version 4", new(raw).header(4, 0, 0).Bytes(), ErrUnsupportedVersion},
		{"huge tensor count", new(raw).header(3, math.MaxUint64, 0).Bytes(), ErrInvalid},
		{"tensor count past file", new(raw).header(3, 1000, 0).zeros(100).Bytes(), ErrInvalid},
		{"huge kv count", new(raw).header(3, 0, 1<<62).Bytes(), ErrInvalid},
		{"key length past end", new(raw).header(3, 0, 1).u64(1 << 40).zeros(8).Bytes(), ErrTruncated},
		{"empty key", new(raw).header(3, 0, 1).str("").u32(uint32(TypeUint8)).zeros(8).Bytes(), ErrInvalid},
		{"unknown value type", new(raw).header(3, 0, 1).str("k").u32(13).zeros(8).Bytes(), ErrUnknownType},
		{"string value past end", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeString)).u64(100).Bytes(), ErrTruncated},
		{"value missing", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeBool)).Bytes(), ErrInvalid},
		{"bool not 0 or 1", append(new(raw).header(3, 0, 1).str("k").u32(uint32(TypeBool)).Bytes(), 2), ErrInvalid},
		{"nested array", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeArray)).u64(1).zeros(16).Bytes(), ErrInvalid},
		{"array elem type unknown", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(99).u64(0).Bytes(), ErrUnknownType},
		{"array count past end", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1 << 61).zeros(64).Bytes(), ErrInvalid},
		{"string array count past end", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(9).zeros(64).Bytes(), ErrInvalid},
		{"string array element past end", new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(2).str("a").u64(1 << 50).Bytes(), ErrTruncated},
		{"duplicate key", new(raw).header(3, 0, 2).kvU32("k", 1).kvU32("k", 2).Bytes(), ErrInvalid},
		{"alignment zero", new(raw).header(3, 0, 1).kvU32(KeyAlignment, 0).Bytes(), ErrInvalid},
		{"alignment not power of two", new(raw).header(3, 0, 1).kvU32(KeyAlignment, 48).Bytes(), ErrInvalid},
		{"alignment huge", new(raw).header(3, 0, 1).kvU32(KeyAlignment, 1<<31).Bytes(), ErrInvalid},
		{"alignment string", new(raw).header(3, 0, 1).str(KeyAlignment).u32(uint32(TypeString)).str("32").Bytes(), ErrInvalid},
		{"name too long", new(raw).header(3, 1, 0).tensor(string(make([]byte, 65)), []uint64{1}, quant.F32, 0).pad(32).zeros(32).Bytes(), ErrInvalid},
		{"empty name", new(raw).header(3, 1, 0).tensor("", []uint64{1}, quant.F32, 0).pad(32).zeros(32).Bytes(), ErrInvalid},
		{"five dims", oneTensor([]uint64{1, 1, 1, 1, 1}, quant.F32, 0, 32), ErrInvalid},
		{"dims product overflow", oneTensor([]uint64{1 << 32, 1 << 32}, quant.F32, 0, 32), ErrInvalid},
		{"dim above int64", oneTensor([]uint64{1 << 63}, quant.F32, 0, 32), ErrInvalid},
		{"unknown tensor type", oneTensor([]uint64{4}, quant.Type(42), 0, 32), ErrUnknownType},
		{"unsupported Q2_K", oneTensor([]uint64{256}, quant.Q2_K, 0, 128), ErrUnknownType},
		{"partial block row", oneTensor([]uint64{40}, quant.Q4_0, 0, 64), ErrInvalid},
		{"misaligned offset", oneTensor([]uint64{4}, quant.F32, 16, 64), ErrInvalid},
		{"tensor past end", oneTensor([]uint64{64}, quant.F32, 0, 255), ErrTruncated},
		{"offset past end", oneTensor([]uint64{1}, quant.F32, 1<<20, 32), ErrTruncated},
		{"offset plus size overflows", oneTensor([]uint64{8}, quant.F32, math.MaxUint64-31, 32), ErrTruncated},
		{"data section missing", new(raw).header(3, 1, 0).tensor("t", []uint64{1}, quant.F32, 0).Bytes(), ErrTruncated},
		{"duplicate tensor", new(raw).header(3, 2, 0).tensor("t", []uint64{8}, quant.F32, 0).tensor("t", []uint64{8}, quant.F32, 32).pad(32).zeros(64).Bytes(), ErrInvalid},
		{"overlapping tensors", new(raw).header(3, 2, 0).tensor("a", []uint64{16}, quant.F32, 0).tensor("b", []uint64{8}, quant.F32, 32).pad(32).zeros(96).Bytes(), ErrInvalid},
		{"same offset", new(raw).header(3, 2, 0).tensor("a", []uint64{8}, quant.F32, 0).tensor("b", []uint64{8}, quant.F32, 0).pad(32).zeros(64).Bytes(), ErrInvalid},
	}
}

func TestParseHostile(t *testing.T) {
	for _, tt := range hostileInputs() {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse: %v, want %v", err, tt.want)
			}
			if f != nil {
				t.Error("Parse returned a File with an error")
			}
			if errors.Is(err, ErrTruncated) && !errors.Is(err, ErrInvalid) {
				t.Errorf("truncation error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

// The hostile variations above must not be rejected for the wrong reason:
// the same builders with sane fields parse.
func TestParseBuilderBaseline(t *testing.T) {
	tests := map[string][]byte{
		"one tensor":    oneTensor([]uint64{4}, quant.F32, 0, 32),
		"zero tensors":  new(raw).header(3, 0, 1).kvU32(KeyAlignment, 64).Bytes(),
		"adjacent":      new(raw).header(3, 2, 0).tensor("a", []uint64{8}, quant.F32, 0).tensor("b", []uint64{8}, quant.F32, 32).pad(32).zeros(64).Bytes(),
		"empty tensor":  oneTensor([]uint64{0, 5}, quant.Q4_0, 0, 0),
		"scalar tensor": oneTensor(nil, quant.F32, 0, 4),
		"64-byte name":  new(raw).header(3, 1, 0).tensor(strings.Repeat("n", 64), []uint64{1}, quant.F32, 0).pad(32).zeros(32).Bytes(),
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every prefix of a valid file that cuts into the last tensor's data is an
// error, never a panic; the last tensor's trailing padding is optional.
func TestParseTruncations(t *testing.T) {
	data := writeBytes(t, sampleKVs(t), sampleTensors(t))
	full, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	var end uint64
	for _, ti := range full.Tensors {
		end = max(end, full.DataOffset+ti.Offset+ti.Size)
	}
	if end == uint64(len(data)) {
		t.Fatal("sample file has no trailing padding; the test needs some")
	}
	for n := 0; n < len(data); n++ {
		_, err := Parse(data[:n])
		if uint64(n) >= end {
			if err != nil {
				t.Fatalf("prefix of %d bytes, past the last tensor's end %d: %v", n, end, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed", n, len(data))
		} else if !errors.Is(err, ErrInvalid) {
			t.Fatalf("prefix of %d bytes: %v does not wrap ErrInvalid", n, err)
		}
	}
}

// allocBound is the most Parse may allocate for an input of n bytes: the
// decoded form of the densest encodings (tiny KVs, empty strings) is a small
// multiple of their size on disk.
func allocBound(n int) uint64 { return 64*uint64(n) + 64<<10 }

// Claims of huge counts must be refused before allocating for them.
func TestParseAllocationBounded(t *testing.T) {
	inputs := [][]byte{
		new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint64)).u64(1 << 40).zeros(4096).Bytes(),
		new(raw).header(3, 0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeString)).u64(500).zeros(4000).Bytes(),
		new(raw).header(3, 1<<40, 0).zeros(4096).Bytes(),
		new(raw).header(3, 0, 1<<40).zeros(4096).Bytes(),
	}
	for i, data := range inputs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = Parse(data)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > allocBound(len(data)) {
			t.Errorf("input %d (%d bytes): Parse allocated %d bytes", i, len(data), got)
		}
	}
}
