package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// The device code of the 32-value block formats (csrc/legacy.cuh) runs on
// the host against the CUDA emulation in emu/, as the K-quants do in
// emu_test.go, and is compared with kernels/quant: the repacked layout
// (Q5_0/Q5_1's transposed fifth bits included), dequantization and the Q8_1
// activations bit for bit, products within float summation order, and batch
// invariance bit for bit.

// legacyWeights are weight patterns for the 32-value formats.
var legacyWeights = []struct {
	name string
	make func(rng *rand.Rand, typ quant.Type, rows, cols int) ([]byte, error)
}{
	{"quantized", func(rng *rand.Rand, typ quant.Type, rows, cols int) ([]byte, error) {
		w := make([]byte, typ.RowBytes(cols)*rows)
		return w, quant.Quantize(typ, randVals(rng, rows*cols, 1/float32(math.Sqrt(float64(cols)))), w)
	}},
	// Random bytes (every qh and nibble pattern) with finite scales.
	{"random bits", func(rng *rand.Rand, typ quant.Type, rows, cols int) ([]byte, error) {
		return rawLegacyWeights(rng, typ, rows, cols, func() uint16 {
			return uint16(rng.IntN(2))<<15 | uint16(1+rng.IntN(8))<<10 | uint16(rng.IntN(1024))
		}), nil
	}},
	// The largest and smallest halves, zero scales and all-zero blocks.
	{"extreme", func(rng *rand.Rand, typ quant.Type, rows, cols int) ([]byte, error) {
		w := rawLegacyWeights(rng, typ, rows, cols, func() uint16 {
			return []uint16{0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x0000, 0x3C00}[rng.IntN(6)]
		})
		bb := typ.BlockBytes()
		for b := 0; b < len(w)/bb; b += 3 {
			clear(w[b*bb : (b+1)*bb])
		}
		return w, nil
	}},
}

// rawLegacyWeights fills rows x cols weights with random bytes and puts the
// halves scale returns in each block's d (and m, for Q4_1/Q5_1).
func rawLegacyWeights(rng *rand.Rand, typ quant.Type, rows, cols int, scale func() uint16) []byte {
	w := make([]byte, typ.RowBytes(cols)*rows)
	for i := range w {
		w[i] = byte(rng.Uint32())
	}
	bb := typ.BlockBytes()
	for b := 0; b < len(w)/bb; b++ {
		binary.LittleEndian.PutUint16(w[b*bb:], scale())
		if typ == quant.Q4_1 || typ == quant.Q5_1 {
			binary.LittleEndian.PutUint16(w[b*bb+2:], scale())
		}
	}
	return w
}

// legacyActivations are activation patterns that stress the Q8_1 quantizer.
var legacyActivations = []struct {
	name string
	fill func(rng *rand.Rand, x []float32, cols int)
}{
	{"normal", func(rng *rand.Rand, x []float32, cols int) {}},
	{"zero block, ties, NaN", func(rng *rand.Rand, x []float32, cols int) {
		clear(x[:32]) // scale 0
		if len(x) > cols {
			// amax 127 makes the scale 1: 2.5 and -3.5 are exact ties,
			// which round away from zero; NaN quantizes to 0.
			x[cols], x[cols+1], x[cols+2], x[cols+3] = 127, 2.5, -3.5, float32(math.NaN())
		}
	}},
	// Scales from subnormal halves up to where s = d*Σq would overflow a
	// half (as it does in the reference: Q8_1 cannot hold such rows).
	{"magnitudes", func(rng *rand.Rand, x []float32, cols int) {
		for i := range x {
			x[i] *= float32(math.Pow(10, float64(rng.IntN(12)-8)))
		}
	}},
}

// legacyCase is one product case of the 32-value formats: a weight type and
// shape, a token count, and the weight and activation patterns to fill.
type legacyCase struct {
	typ          quant.Type
	rows, cols   int
	tokens       int
	weights, act int // indexes into legacyWeights, legacyActivations
}

func TestLegacyKernelsEmulated(t *testing.T) {
	exe := buildEmu(t, "legacy_check")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(31, 32))
	// 1, 3, 18 (576 values, SmolLM2's width), 34 (lanes take two blocks)
	// and 64 blocks a row; rows that leave warps of a thread block idle;
	// 1..19 tokens cover every token group width (16, 8, 4, 2, 1).
	for i, tc := range []legacyCase{
		{quant.Q5_0, 9, 576, 19, 0, 0},
		{quant.Q5_0, 5, 32, 1, 1, 0},
		{quant.Q5_0, 6, 1088, 17, 1, 2},
		{quant.Q5_0, 7, 96, 8, 2, 1},
		{quant.Q5_0, 4, 2048, 3, 2, 0},
		{quant.Q5_1, 13, 576, 5, 0, 1},
		{quant.Q5_1, 3, 1088, 16, 1, 0},
		{quant.Q5_1, 8, 96, 2, 1, 1},
		{quant.Q5_1, 5, 2048, 4, 2, 2},
		{quant.Q5_1, 2, 32, 9, 2, 0},
		{quant.Q4_0, 5, 576, 7, 1, 1},
		{quant.Q4_1, 6, 1088, 6, 2, 2},
		{quant.Q8_0, 7, 576, 10, 1, 0},
	} {
		wp, ap := legacyWeights[tc.weights], legacyActivations[tc.act]
		name := fmt.Sprintf("%v/%dx%d/%d tokens/%s weights/%s", tc.typ, tc.rows, tc.cols, tc.tokens, wp.name, ap.name)
		t.Run(name, func(t *testing.T) {
			w, err := wp.make(rng, tc.typ, tc.rows, tc.cols)
			if err != nil {
				t.Fatal(err)
			}
			x := randVals(rng, tc.tokens*tc.cols, 1)
			ap.fill(rng, x, tc.cols)
			got := runLegacyEmu(t, exe, filepath.Join(dir, fmt.Sprintf("case%d", i)), tc.typ, tc.rows, tc.cols, w, x)
			checkLegacy(t, tc.typ, tc.rows, tc.cols, w, x, got)
		})
	}
}

// legacyResult is what legacy_check computed.
type legacyResult struct {
	repacked        []byte
	deq             []float32
	codes           []byte
	ds              []byte // (d, s) halves per block, little-endian
	grouped, single []float32
}

func runLegacyEmu(t *testing.T, exe, base string, typ quant.Type, rows, cols int, w []byte, x []float32) legacyResult {
	t.Helper()
	n, nx := len(x)/cols, len(x)/32
	out := runCheckTool(t, exe, base, typ, rows, cols, w, x,
		len(w)+4*rows*cols+32*nx+4*nx+2*4*n*rows)
	var r legacyResult
	r.repacked = out.bytes(len(w))
	r.deq = out.floats(rows * cols)
	r.codes = out.bytes(32 * nx)
	r.ds = out.bytes(4 * nx)
	r.grouped = out.floats(n * rows)
	r.single = out.floats(n * rows)
	return r
}

// transposeQH is the device's documented qh order: value j's fifth bit at
// bit 8*(j%4) + j/4.
func transposeQH(qh uint32) uint32 {
	var t uint32
	for j := range 32 {
		t |= (qh >> j & 1) << (8*(j%4) + j/4)
	}
	return t
}

// legacyRepack is the device layout of ggml blocks w: all payloads (the
// codes), then all scale records (d, m and, for Q5_0/Q5_1, the transposed
// qh).
func legacyRepack(typ quant.Type, w []byte) []byte {
	var scb int // bytes of scales before the codes in a ggml block
	switch typ {
	case quant.Q4_0, quant.Q8_0:
		scb = 2
	case quant.Q4_1:
		scb = 4
	case quant.Q5_0:
		scb = 6
	case quant.Q5_1:
		scb = 8
	}
	bb := typ.BlockBytes()
	nb := len(w) / bb
	qs := make([]byte, 0, len(w))
	var sc []byte
	for b := range nb {
		blk := w[b*bb : (b+1)*bb]
		qs = append(qs, blk[scb:]...)
		rec := append([]byte(nil), blk[:scb]...)
		if typ == quant.Q5_0 || typ == quant.Q5_1 {
			binary.LittleEndian.PutUint32(rec[scb-4:], transposeQH(binary.LittleEndian.Uint32(rec[scb-4:])))
		}
		sc = append(sc, rec...)
	}
	return append(qs, sc...)
}

// checkLegacy compares what the device code computed with kernels/quant.
// The repacked bytes and the Q8_1 activations are checked when present (the
// emulation returns them; a GPU run does not).
func checkLegacy(t *testing.T, typ quant.Type, rows, cols int, w []byte, x []float32, got legacyResult) {
	t.Helper()
	if got.repacked != nil {
		want := legacyRepack(typ, w)
		for i := range want {
			if want[i] != got.repacked[i] {
				t.Fatalf("repacked byte %d (of %d): %#02x, want %#02x", i, len(want), got.repacked[i], want[i])
			}
		}
	}
	deq := make([]float32, rows*cols)
	if err := quant.Dequantize(typ, w, deq); err != nil {
		t.Fatal(err)
	}
	for i := range deq {
		if math.Float32bits(deq[i]) != math.Float32bits(got.deq[i]) {
			t.Fatalf("dequantized value %d (row %d, block value %d): %g, want %g", i, i/cols, i%32, got.deq[i], deq[i])
		}
	}
	n, nbr, rb := len(x)/cols, cols/32, typ.RowBytes(cols)
	q81 := make([]byte, quant.Q8_1.RowBytes(cols))
	act := make([]byte, mustActBytes(t, typ, cols))
	ab := len(act) / nbr
	for tok := 0; tok < n; tok++ {
		row := x[tok*cols : (tok+1)*cols]
		if err := quant.Quantize(quant.Q8_1, row, q81); err != nil {
			t.Fatal(err)
		}
		for b := 0; b < nbr && got.codes != nil; b++ {
			blk, xb := q81[b*36:(b+1)*36], tok*nbr+b
			if g, w := binary.LittleEndian.Uint32(got.ds[4*xb:]), binary.LittleEndian.Uint32(blk); g != w {
				t.Fatalf("token %d block %d: Q8_1 (d, s) halves %#08x, want %#08x", tok, b, g, w)
			}
			for j, c := range got.codes[32*xb : 32*xb+32] {
				if c != blk[4+j] {
					t.Fatalf("token %d block %d: Q8_1 code %d is %d, want %d", tok, b, j, int8(c), int8(blk[4+j]))
				}
			}
		}
		if err := quant.QuantizeActivations(typ, row, act); err != nil {
			t.Fatal(err)
		}
		for r := range rows {
			wr := w[r*rb : (r+1)*rb]
			v, err := quant.VecDot(typ, wr, act, cols)
			if err != nil {
				t.Fatal(err)
			}
			// Blocks match the reference exactly; only the order of the
			// float sum over a row's blocks differs, which moves the result
			// by at most about (blocks + butterfly depth) roundings of the
			// sum of magnitudes.
			var mag float64
			for b := range nbr {
				d, err := quant.VecDot(typ, wr[b*typ.BlockBytes():(b+1)*typ.BlockBytes()], act[b*ab:(b+1)*ab], 32)
				if err != nil {
					t.Fatal(err)
				}
				mag += math.Abs(float64(d))
			}
			g, s := got.grouped[tok*rows+r], got.single[tok*rows+r]
			if math.Float32bits(g) != math.Float32bits(s) {
				t.Fatalf("token %d row %d: %g in a token group, %g alone: not batch-invariant", tok, r, g, s)
			}
			bound := float64(nbr+8) * 0x1p-23 * mag
			if d := math.Abs(float64(g) - float64(v)); !(d <= bound) {
				t.Fatalf("token %d row %d: %g, want %g (difference %g, bound %g)", tok, r, g, v, d, bound)
			}
		}
	}
}

func mustActBytes(t *testing.T, typ quant.Type, cols int) int {
	t.Helper()
	at, ok := quant.ActivationType(typ)
	if !ok {
		t.Fatalf("no activation type for %v", typ)
	}
	return at.RowBytes(cols)
}
