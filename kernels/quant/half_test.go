package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestF16ToF32(t *testing.T) {
	tests := []struct {
		name string
		h    uint16
		want float32
	}{
		{"zero", 0x0000, 0},
		{"one", 0x3c00, 1},
		{"minus two", 0xc000, -2},
		{"max normal", 0x7bff, 65504},
		{"min normal", 0x0400, 1.0 / (1 << 14)},
		{"min subnormal", 0x0001, 1.0 / (1 << 24)},
		{"max subnormal", 0x03ff, 1023.0 / (1 << 24)},
		{"neg subnormal", 0x8200, -512.0 / (1 << 24)},
		{"one third", 0x3555, 0.333251953125},
		{"inf", 0x7c00, float32(math.Inf(1))},
		{"neg inf", 0xfc00, float32(math.Inf(-1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := F16ToF32(tt.h); got != tt.want {
				t.Errorf("F16ToF32(%#04x) = %v, want %v", tt.h, got, tt.want)
			}
		})
	}
	if got := F16ToF32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("F16ToF32(0x8000) = %v, want -0", got)
	}
	for _, h := range []uint16{0x7e00, 0x7c01, 0xfe00, 0x7fff} {
		if got := F16ToF32(h); !math.IsNaN(float64(got)) {
			t.Errorf("F16ToF32(%#04x) = %v, want NaN", h, got)
		}
	}
}

func TestF32ToF16(t *testing.T) {
	const ulp1 = 1.0 / 1024 // spacing of halves in [1, 2)
	tests := []struct {
		name string
		f    float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"tie rounds down to even", 1 + ulp1/2, 0x3c00},
		{"tie rounds up to even", 1 + 3*ulp1/2, 0x3c02},
		{"above tie", 1 + ulp1/2 + 1.0/(1<<20), 0x3c01},
		{"max normal", 65504, 0x7bff},
		{"below overflow tie", 65519, 0x7bff},
		{"overflow tie to inf", 65520, 0x7c00},
		{"huge", 1e30, 0x7c00},
		{"neg huge", -1e30, 0xfc00},
		{"min subnormal", 1.0 / (1 << 24), 0x0001},
		{"half min subnormal ties to zero", 1.0 / (1 << 25), 0x0000},
		{"above half min subnormal", 1.0/(1<<25) + 1.0/(1<<35), 0x0001},
		{"subnormal tie to even", 3.0 / (1 << 25), 0x0002},
		{"largest subnormal rounds to min normal", 1.0/(1<<14) - 1.0/(1<<26), 0x0400},
		{"tiny", 1e-30, 0x0000},
		{"neg tiny", -1e-30, 0x8000},
		{"inf", float32(math.Inf(1)), 0x7c00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := F32ToF16(tt.f); got != tt.want {
				t.Errorf("F32ToF16(%v) = %#04x, want %#04x", tt.f, got, tt.want)
			}
		})
	}
	for _, bits := range []uint32{0x7fc00000, 0x7f800001, 0xffc00000} {
		h := F32ToF16(math.Float32frombits(bits))
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Errorf("F32ToF16(NaN %#08x) = %#04x, want a NaN", bits, h)
		}
	}
}

// Every finite half converts to float32 and back unchanged.
func TestF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		if math.IsNaN(float64(f)) {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("F16ToF32(%#04x) is NaN", h)
			}
			continue
		}
		if got := F32ToF16(f); got != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x)=%v) = %#04x", h, f, got)
		}
	}
}

// F32ToF16 picks the nearest half, ties to even: checked against the two
// neighbouring halves in float64 for random float32 bit patterns.
func TestF32ToF16Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || abs32(f) >= 65504 {
			continue
		}
		h := F32ToF16(f)
		got := float64(F16ToF32(h))
		err := math.Abs(got - float64(f))
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7fff >= 0x7c00 || (nb^h)&0x8000 != 0 {
				continue
			}
			ne := math.Abs(float64(F16ToF32(nb)) - float64(f))
			if ne < err || (ne == err && h&1 == 1) {
				t.Fatalf("F32ToF16(%v) = %#04x (%v), but %#04x (%v) is nearer or the even tie", f, h, got, nb, F16ToF32(nb))
			}
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		name string
		f    float32
		want uint16
	}{
		{"one", 1, 0x3f80},
		{"minus one", -1, 0xbf80},
		{"tie down to even", math.Float32frombits(0x3f808000), 0x3f80},
		{"tie up to even", math.Float32frombits(0x3f818000), 0x3f82},
		{"above tie", math.Float32frombits(0x3f808001), 0x3f81},
		{"max float rounds to inf", math.MaxFloat32, 0x7f80},
		{"inf", float32(math.Inf(-1)), 0xff80},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := F32ToBF16(tt.f)
			if got != tt.want {
				t.Errorf("F32ToBF16(%v) = %#04x, want %#04x", tt.f, got, tt.want)
			}
			if tt.want&0x7f80 != 0x7f80 && BF16ToF32(got) != math.Float32frombits(uint32(tt.want)<<16) {
				t.Errorf("BF16ToF32(%#04x) = %v", got, BF16ToF32(got))
			}
		})
	}
	// A NaN whose payload sits only in the low half must stay NaN.
	if h := F32ToBF16(math.Float32frombits(0x7f800001)); !math.IsNaN(float64(BF16ToF32(h))) {
		t.Errorf("F32ToBF16(signalling NaN) = %#04x, not NaN", h)
	}
	for i := 0; i < 1<<16; i++ {
		f := BF16ToF32(uint16(i))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := F32ToBF16(f); got != uint16(i) {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", i, got)
		}
	}
}
