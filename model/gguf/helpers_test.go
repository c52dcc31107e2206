package gguf

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// raw builds GGUF bytes field by field, so tests can write files that Write
// would refuse to produce.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw {
	_ = binary.Write(&r.Buffer, binary.LittleEndian, v)
	return r
}

func (r *raw) u64(v uint64) *raw {
	_ = binary.Write(&r.Buffer, binary.LittleEndian, v)
	return r
}

func (r *raw) str(s string) *raw {
	r.u64(uint64(len(s)))
	r.WriteString(s)
	return r
}

func (r *raw) header(version uint32, nTensors, nKV uint64) *raw {
	r.WriteString(Magic)
	return r.u32(version).u64(nTensors).u64(nKV)
}

// kvU32 appends a uint32 metadata pair.
func (r *raw) kvU32(key string, v uint32) *raw {
	return r.str(key).u32(uint32(TypeUint32)).u32(v)
}

// tensor appends a descriptor.
func (r *raw) tensor(name string, dims []uint64, typ quant.Type, off uint64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(d)
	}
	return r.u32(uint32(typ)).u64(off)
}

// pad appends zeros up to a multiple of align.
func (r *raw) pad(align int) *raw {
	for r.Len()%align != 0 {
		r.WriteByte(0)
	}
	return r
}

func (r *raw) zeros(n int) *raw {
	r.Write(make([]byte, n))
	return r
}

func mustValue(t testing.TB, x any) Value {
	t.Helper()
	v, err := NewValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sampleKVs has one pair of every value type and array element type.
func sampleKVs(t testing.TB) []KV {
	t.Helper()
	pairs := []struct {
		k string
		v any
	}{
		{"general.architecture", "llama"},
		{"test.u8", uint8(200)},
		{"test.i8", int8(-100)},
		{"test.u16", uint16(60000)},
		{"test.i16", int16(-30000)},
		{"test.u32", uint32(4000000000)},
		{"test.i32", int32(-2000000000)},
		{"test.f32", float32(1e-5)},
		{"test.bool", true},
		{"test.u64", uint64(1) << 63},
		{"test.i64", int64(-1) << 62},
		{"test.f64", 2.5},
		{"test.empty_string", ""},
		{"test.unicode", "Ġthe ✓"},
		{"test.arr.u8", []uint8{1, 2, 255}},
		{"test.arr.i8", []int8{-1, 0, 1}},
		{"test.arr.u16", []uint16{65535}},
		{"test.arr.i16", []int16{-2, 2}},
		{"test.arr.u32", []uint32{7}},
		{"test.arr.i32", []int32{3, 3, 1, 3}},
		{"test.arr.f32", []float32{0.5, -1}},
		{"test.arr.bool", []bool{true, false}},
		{"test.arr.string", []string{"a", "", "b c"}},
		{"test.arr.u64", []uint64{1 << 40}},
		{"test.arr.i64", []int64{-5}},
		{"test.arr.f64", []float64{1e30}},
		{"test.arr.empty", []int32{}},
	}
	kvs := make([]KV, len(pairs))
	for i, p := range pairs {
		kvs[i] = KV{Key: p.k, Value: mustValue(t, p.v)}
	}
	return kvs
}

// sampleTensors has quantized and float tensors of 1 to 4 dims.
func sampleTensors(t testing.TB) []WriteTensor {
	t.Helper()
	mk := func(name string, typ quant.Type, dims ...uint64) WriteTensor {
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%17) - 8
		}
		data := make([]byte, typ.RowBytes(int(n)))
		if err := quant.Quantize(typ, x, data); err != nil {
			t.Fatal(err)
		}
		return WriteTensor{Name: name, Dims: dims, Type: typ, Data: data}
	}
	return []WriteTensor{
		mk("token_embd.weight", quant.Q8_0, 64, 3),
		mk("blk.0.attn_norm.weight", quant.F32, 64),
		mk("blk.0.ffn_up.weight", quant.Q4_1, 32, 2, 2),
		mk("blk.0.ffn_down.weight", quant.Q6_K, 256, 1, 1, 2),
		mk("half", quant.F16, 3),
		mk("bf", quant.BF16, 5),
	}
}

func writeBytes(t testing.TB, kvs []KV, ts []WriteTensor) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, kvs, ts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
