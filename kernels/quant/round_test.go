package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestRounding(t *testing.T) {
	tests := []struct {
		v       float32
		even    int     // nearestInt: half to even
		awayVal float32 // roundAway: half away from zero
	}{
		{0, 0, 0},
		{0.5, 0, 1},
		{1.5, 2, 2},
		{2.5, 2, 3},
		{-0.5, 0, -1},
		{-2.5, -2, -3},
		{0.49999997, 0, 0},
		{-126.5, -126, -127},
		{127.49, 127, 127},
		{1e10, 10000000000, 1e10},
	}
	for _, tt := range tests {
		if got := nearestInt(tt.v); got != tt.even {
			t.Errorf("nearestInt(%v) = %d, want %d", tt.v, got, tt.even)
		}
		if got := roundAway(tt.v); got != tt.awayVal {
			t.Errorf("roundAway(%v) = %v, want %v", tt.v, got, tt.awayVal)
		}
	}
	if got := nearestInt(float32(math.NaN())); got != 0 {
		t.Errorf("nearestInt(NaN) = %d", got)
	}
	r := rand.New(rand.NewPCG(15, 16))
	for range 100000 {
		v := float32((r.Float64()*2 - 1) * math.Ldexp(1, r.IntN(30)))
		if got, want := nearestInt(v), int(math.RoundToEven(float64(v))); got != want {
			t.Fatalf("nearestInt(%v) = %d, want %d", v, got, want)
		}
		if got, want := roundAway(v), float32(math.Round(float64(v))); got != want {
			t.Fatalf("roundAway(%v) = %v, want %v", v, got, want)
		}
	}
}
