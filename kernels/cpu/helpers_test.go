package cpu

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// allTypes are the weight types the backend computes with.
var allTypes = []quant.Type{quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0,
	quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.F16, quant.BF16, quant.F32}

// levels returns the kernel levels this CPU runs, lowest first.
func levels(t testing.TB) []Level {
	b := newBackend(t, Config{Threads: 1, MaxLevel: LevelAVX512})
	top := b.Level()
	out := []Level{}
	for l := LevelGeneric; l <= top; l++ {
		out = append(out, l)
	}
	return out
}

func newBackend(t testing.TB, cfg Config) *Backend {
	t.Helper()
	b, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// randWeights returns rows x cols of random blocks of type typ with finite,
// moderate scales, so no quantizer is needed to make test matrices.
func randWeights(r *rand.Rand, typ quant.Type, rows, cols int) []byte {
	data := make([]byte, typ.RowBytes(cols)*rows)
	putF16 := func(off int, v float32) { binary.LittleEndian.PutUint16(data[off:], quant.F32ToF16(v)) }
	switch typ {
	case quant.F32:
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(r.NormFloat64())))
		}
		return data
	case quant.F16:
		for i := 0; i < rows*cols; i++ {
			putF16(2*i, float32(r.NormFloat64()))
		}
		return data
	case quant.BF16:
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint16(data[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()))>>16))
		}
		return data
	}
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	bb := typ.BlockBytes()
	for off := 0; off < len(data); off += bb {
		d := float32(r.Float64()*0.02 + 0.001)
		m := float32(r.Float64()*0.2 - 0.1)
		switch typ {
		case quant.Q4_0, quant.Q5_0, quant.Q8_0:
			putF16(off, d)
		case quant.Q4_1, quant.Q5_1:
			putF16(off, d)
			putF16(off+2, m)
		case quant.Q4_K, quant.Q5_K:
			putF16(off, d)
			putF16(off+2, d/2)
		case quant.Q6_K:
			putF16(off+208, d)
		}
	}
	return data
}

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

// dequantRows decodes a weight matrix with the pure-Go reference.
func dequantRows(t testing.TB, typ quant.Type, data []byte, rows, cols int) []float32 {
	t.Helper()
	out := make([]float32, rows*cols)
	if err := quant.Dequantize(typ, data, out); err != nil {
		t.Fatalf("Dequantize %v: %v", typ, err)
	}
	return out
}

// simQuant reproduces the backend's activation quantization (symmetric
// d = max|x|/127 per block, round half to even) so MatMul can be checked
// against an exact dot product of the very values the kernels multiply.
func simQuant(x []float32, block int) []float64 {
	out := make([]float64, len(x))
	for b := 0; b < len(x); b += block {
		var amax float32
		for _, v := range x[b : b+block] {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		id := float32(0)
		if d != 0 {
			id = 1 / d
		}
		for j, v := range x[b : b+block] {
			q := math.RoundToEven(float64(v * id))
			q = max(-127, min(127, q))
			out[b+j] = q * float64(d)
		}
	}
	return out
}

// actBlock is the activation block size the backend quantizes to for typ, 0
// for float weights.
func actBlock(typ quant.Type) int {
	switch typ {
	case quant.F32, quant.F16, quant.BF16:
		return 0
	case quant.Q4_K, quant.Q5_K, quant.Q6_K:
		return 256
	}
	return 32
}

func tensorOf(b kernels.Backend, rows, cols int, data []float32) kernels.Tensor {
	t := b.NewTensor(rows, cols)
	if data != nil {
		b.Write(t, data)
	}
	return t
}

func readAll(b kernels.Backend, t kernels.Tensor) []float32 {
	out := make([]float32, t.Rows()*t.Cols())
	b.Read(out, t)
	return out
}
