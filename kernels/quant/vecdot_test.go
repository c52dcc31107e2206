package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestActivationType(t *testing.T) {
	tests := []struct {
		w    Type
		want Type
		ok   bool
	}{
		{F32, F32, true}, {F16, F32, true}, {BF16, F32, true},
		{Q4_0, Q8_0, true}, {Q5_0, Q8_0, true}, {Q8_0, Q8_0, true},
		{Q4_1, Q8_1, true}, {Q5_1, Q8_1, true},
		{Q4_K, Q8_K, true}, {Q5_K, Q8_K, true}, {Q6_K, Q8_K, true},
		{Q8_1, 0, false}, {Q8_K, 0, false}, {Q2_K, 0, false}, {Type(77), 0, false},
	}
	for _, tt := range tests {
		got, ok := ActivationType(tt.w)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ActivationType(%v) = %v, %v; want %v, %v", tt.w, got, ok, tt.want, tt.ok)
		}
	}
}

// encodeRows quantizes weights w as typ and activations a for it.
func encodeRows(t *testing.T, typ Type, w, a []float32) (wb, ab []byte) {
	t.Helper()
	at, _ := ActivationType(typ)
	wb = make([]byte, typ.RowBytes(len(w)))
	ab = make([]byte, at.RowBytes(len(a)))
	if err := Quantize(typ, w, wb); err != nil {
		t.Fatal(err)
	}
	if err := QuantizeActivations(typ, a, ab); err != nil {
		t.Fatal(err)
	}
	return wb, ab
}

func decode(t *testing.T, typ Type, b []byte, n int) []float32 {
	t.Helper()
	y := make([]float32, n)
	if err := Dequantize(typ, b, y); err != nil {
		t.Fatal(err)
	}
	return y
}

// TestVecDotMatchesDequantized: the integer formulas must equal the float dot
// of the dequantized rows up to float32 rounding. The Q8_1 min term uses the
// stored f16 s = d*Σq, hence the extra f16-sized slack for Q4_1/Q5_1.
func TestVecDotMatchesDequantized(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const n = 4 * 256
	for _, typ := range weightTypes {
		t.Run(typ.String(), func(t *testing.T) {
			at, _ := ActivationType(typ)
			for trial := range 20 {
				// Positive offsets exercise the Q4_1/Q5_1 and K-quant mins.
				w := randRow(r, n, 0.1)
				for i := range w {
					w[i] += float32(trial%3) * 0.05
				}
				a := randRow(r, n, 2)
				wb, ab := encodeRows(t, typ, w, a)
				got, err := VecDot(typ, wb, ab, n)
				if err != nil {
					t.Fatal(err)
				}
				wd, ad := decode(t, typ, wb, n), decode(t, at, ab, n)
				var want, mag float64
				for i := range wd {
					want += float64(wd[i]) * float64(ad[i])
					mag += math.Abs(float64(wd[i]) * float64(ad[i]))
				}
				tol := 1e-5 * mag
				if at == Q8_1 {
					tol = 2e-3 * mag
				}
				if math.Abs(float64(got)-want) > tol {
					t.Fatalf("trial %d: VecDot = %v, dequantized dot = %v (tol %.3g)", trial, got, want, tol)
				}
			}
		})
	}
}

// TestVecDotAccuracy compares against the exact dot of the unquantized rows:
// the error is bounded by the quantization noise, roughly the relative
// RMS error of the weight format times ‖w‖‖a‖.
func TestVecDotAccuracy(t *testing.T) {
	rel := map[Type]float64{
		F32: 1e-6, F16: 1e-3, BF16: 8e-3,
		Q8_0: 0.02, Q4_0: 0.15, Q4_1: 0.1, Q5_0: 0.08, Q5_1: 0.05,
		Q4_K: 0.1, Q5_K: 0.05, Q6_K: 0.03,
	}
	r := rand.New(rand.NewPCG(11, 12))
	const n = 8 * 256
	for _, typ := range weightTypes {
		t.Run(typ.String(), func(t *testing.T) {
			w, a := randRow(r, n, 0.05), randRow(r, n, 1)
			wb, ab := encodeRows(t, typ, w, a)
			got, err := VecDot(typ, wb, ab, n)
			if err != nil {
				t.Fatal(err)
			}
			var want, nw, na float64
			for i := range w {
				want += float64(w[i]) * float64(a[i])
				nw += float64(w[i]) * float64(w[i])
				na += float64(a[i]) * float64(a[i])
			}
			if e := math.Abs(float64(got) - want); e > rel[typ]*math.Sqrt(nw*na) {
				t.Errorf("VecDot = %v, exact %v: error %.3g > %.3g", got, want, e, rel[typ]*math.Sqrt(nw*na))
			}
		})
	}
}

func TestVecDotErrors(t *testing.T) {
	tests := []struct {
		name    string
		typ     Type
		wLen    int
		aLen    int
		n       int
		wantErr error
	}{
		{"activation format as weight", Q8_1, 36, 36, 32, ErrUnsupported},
		{"unknown type", Type(40), 32, 32, 32, ErrUnsupported},
		{"short weights", Q4_0, 17, 34, 32, ErrLength},
		{"short activations", Q4_1, 20, 34, 32, ErrLength},
		{"partial block", Q4_K, 144, 292, 255, ErrLength},
		{"f32 activations too long", F16, 64, 132, 32, ErrLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := VecDot(tt.typ, make([]byte, tt.wLen), make([]byte, tt.aLen), tt.n); !errors.Is(err, tt.wantErr) {
				t.Errorf("VecDot: %v, want %v", err, tt.wantErr)
			}
		})
	}
	if err := QuantizeActivations(Q8_K, make([]float32, 256), make([]byte, 292)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("QuantizeActivations(Q8_K): %v, want ErrUnsupported", err)
	}
}

// Q8_1's s field and Q8_K's bsums are what the kernels rely on for the min
// terms: check them against the codes directly.
func TestActivationSums(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	x := randRow(r, 512, 3)
	b1 := make([]byte, Q8_1.RowBytes(len(x)))
	if err := Quantize(Q8_1, x, b1); err != nil {
		t.Fatal(err)
	}
	for blk := 0; blk < len(x)/32; blk++ {
		b := b1[36*blk:]
		sum := 0
		for _, q := range b[4:36] {
			sum += int(int8(q))
		}
		d, s := F16ToF32(uint16(b[0])|uint16(b[1])<<8), F16ToF32(uint16(b[2])|uint16(b[3])<<8)
		if want := float64(d) * float64(sum); math.Abs(float64(s)-want) > 1e-3*math.Abs(want)+1e-6 {
			t.Fatalf("Q8_1 block %d: s = %v, want d*Σq = %v", blk, s, want)
		}
	}
	bk := make([]byte, Q8_K.RowBytes(len(x)))
	if err := Quantize(Q8_K, x, bk); err != nil {
		t.Fatal(err)
	}
	for blk := 0; blk < len(x)/256; blk++ {
		_, qs, bsum := q8K(bk[292*blk:])
		for k := 0; k < 16; k++ {
			var s int32
			for _, q := range qs[16*k : 16*k+16] {
				s += int32(int8(q))
			}
			if bsum(k) != s {
				t.Fatalf("Q8_K block %d: bsums[%d] = %d, want %d", blk, k, bsum(k), s)
			}
		}
	}
}
