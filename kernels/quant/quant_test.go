package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// weightTypes are the formats model weights may use.
var weightTypes = []Type{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K}

// allTypes adds the activation-only formats.
var allTypes = append(append([]Type(nil), weightTypes...), Q8_1, Q8_K)

func randRow(r *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * scale
	}
	return x
}

func roundTrip(t *testing.T, typ Type, x []float32) []float32 {
	t.Helper()
	buf := make([]byte, typ.RowBytes(len(x)))
	if err := Quantize(typ, x, buf); err != nil {
		t.Fatalf("Quantize(%v): %v", typ, err)
	}
	y := make([]float32, len(x))
	if err := Dequantize(typ, buf, y); err != nil {
		t.Fatalf("Dequantize(%v): %v", typ, err)
	}
	return y
}

// TestRoundTripError bounds dequant(quant(x)) - x per block, relative to the
// block's largest magnitude. The bounds follow from each format's step:
// symmetric b-bit formats put amax on the code -2^(b-1), so the far side can
// be off by one full step amax/2^(b-1); asymmetric formats err by half a step
// of range/(2^b-1) plus f16 rounding of the min; K-quants add the 6-bit
// rounding of the sub-block scales. The scales stay above 0.02 so that the
// f16 block scales are normal numbers with 11-bit precision.
func TestRoundTripError(t *testing.T) {
	bounds := map[Type]float64{
		F32:  0,
		F16:  1.0 / 2048,
		BF16: 1.0 / 256,
		Q8_0: 1.0/254 + 1e-3,
		Q8_1: 1.0/254 + 1e-3,
		Q8_K: 1.0/254 + 1e-6,
		Q4_0: 1.0/8 + 1e-3,
		Q5_0: 1.0/16 + 1e-3,
		Q4_1: 2.0/30 + 2e-3,
		Q5_1: 2.0/62 + 2e-3,
		Q4_K: 2.0 / 15,
		Q5_K: 2.0 / 31,
		Q6_K: 1.0 / 16,
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			bound, ok := bounds[typ]
			if !ok {
				t.Fatalf("no bound for %v", typ)
			}
			bs := max(typ.BlockSize(), 32)
			for _, scale := range []float32{0.02, 1, 300} {
				x := randRow(r, 8*256, scale)
				y := roundTrip(t, typ, x)
				for b := 0; b < len(x); b += bs {
					amax := float64(absMax(x[b : b+bs]))
					for i := b; i < b+bs; i++ {
						if e := math.Abs(float64(y[i] - x[i])); e > bound*amax {
							t.Fatalf("scale %v: value %d: got %v want %v: error %.3g > %.3g*amax(%.3g)", scale, i, y[i], x[i], e, bound, amax)
						}
					}
				}
			}
		})
	}
}

// The K-quant scale search must beat plain rounding to a grid spanning the
// block: compare the RMS error with a bound of half that of a uniform grid.
func TestKQuantRMS(t *testing.T) {
	tests := []struct {
		typ  Type
		bits int
	}{{Q4_K, 4}, {Q5_K, 5}, {Q6_K, 6}}
	r := rand.New(rand.NewPCG(5, 6))
	x := randRow(r, 16*256, 1)
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			y := roundTrip(t, tt.typ, x)
			var se, sx float64
			for i := range x {
				d := float64(y[i] - x[i])
				se += d * d
				sx += float64(x[i]) * float64(x[i])
			}
			rel := math.Sqrt(se / sx)
			// A uniform grid of 2^bits levels over ±3σ has RMS error
			// 6/(2^bits)/sqrt(12) σ; per-32 scales must do better.
			limit := 6 / math.Ldexp(1, tt.bits) / math.Sqrt(12)
			if rel > limit {
				t.Errorf("relative RMS error %.4f > %.4f", rel, limit)
			}
			t.Logf("%v relative RMS error %.4f", tt.typ, rel)
		})
	}
}

func TestQuantizeSpecialBlocks(t *testing.T) {
	tests := []struct {
		name string
		fill func(i int) float32
	}{
		{"zeros", func(int) float32 { return 0 }},
		{"constant", func(int) float32 { return 0.75 }},
		{"negative constant", func(int) float32 { return -2 }},
		{"one spike", func(i int) float32 {
			if i == 7 {
				return 5
			}
			return 0
		}},
		{"tiny", func(i int) float32 { return float32(i%3) * 1e-20 }},
	}
	for _, tt := range tests {
		for _, typ := range allTypes {
			t.Run(tt.name+"/"+typ.String(), func(t *testing.T) {
				x := make([]float32, 256)
				for i := range x {
					x[i] = tt.fill(i)
				}
				y := roundTrip(t, typ, x)
				amax := float64(absMax(x))
				for i := range y {
					if math.IsNaN(float64(y[i])) || math.IsInf(float64(y[i]), 0) {
						t.Fatalf("value %d decodes to %v", i, y[i])
					}
					// Within an eighth of the range, or exact where amax
					// is below what f16 scales can represent.
					if e := math.Abs(float64(y[i] - x[i])); e > amax/7.9+1e-7 {
						t.Fatalf("value %d: got %v want %v", i, y[i], x[i])
					}
				}
				if amax == 0 {
					for i := range y {
						if y[i] != 0 {
							t.Fatalf("zero block decodes to %v at %d", y[i], i)
						}
					}
				}
			})
		}
	}
}

func TestSizeErrors(t *testing.T) {
	tests := []struct {
		name    string
		typ     Type
		n       int
		nbytes  int
		wantErr error
	}{
		{"partial block", Q4_0, 31, 18, ErrLength},
		{"short buffer", Q4_0, 32, 17, ErrLength},
		{"long buffer", Q4_K, 256, 145, ErrLength},
		{"partial superblock", Q6_K, 128, 105, ErrLength},
		{"unknown type", Type(99), 32, 32, ErrUnsupported},
		{"no code for Q2_K", Q2_K, 256, 84, ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Quantize(tt.typ, make([]float32, tt.n), make([]byte, tt.nbytes)); !errors.Is(err, tt.wantErr) {
				t.Errorf("Quantize: %v, want %v", err, tt.wantErr)
			}
			if err := Dequantize(tt.typ, make([]byte, tt.nbytes), make([]float32, tt.n)); !errors.Is(err, tt.wantErr) {
				t.Errorf("Dequantize: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// Every byte pattern must decode without panicking; only non-finite scales
// may produce non-finite values.
func TestDequantizeArbitraryBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, typ := range allTypes {
		src := make([]byte, typ.RowBytes(1024))
		for i := range src {
			src[i] = byte(r.Uint32())
		}
		if err := Dequantize(typ, src, make([]float32, 1024)); err != nil {
			t.Errorf("%v: %v", typ, err)
		}
	}
}

// Non-finite input is not rejected (ggml does not check either) but must not
// panic or produce out-of-range codes: decoding the result stays possible.
func TestQuantizeNonFinite(t *testing.T) {
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -math.MaxFloat32}
	for _, typ := range allTypes {
		for _, s := range specials {
			x := make([]float32, 256)
			for i := range x {
				x[i] = float32(i%9) - 4
			}
			x[17] = s
			buf := make([]byte, typ.RowBytes(len(x)))
			if err := Quantize(typ, x, buf); err != nil {
				t.Fatalf("%v with %v: %v", typ, s, err)
			}
			if err := Dequantize(typ, buf, make([]float32, len(x))); err != nil {
				t.Fatalf("%v with %v: decode: %v", typ, s, err)
			}
		}
	}
}
