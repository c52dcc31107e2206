package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestQuantizeQ8AMatchesPortable checks that every level quantizes
// activation rows to the same bytes as the portable C code, edge values
// included: the SIMD MatMul paths must not change 8-bit-activation results.
func TestQuantizeQ8AMatchesPortable(t *testing.T) {
	generic := newKernels(LevelGeneric)
	defer generic.free()
	r := rand.New(rand.NewPCG(5, 6))
	block := func(f func(j int) float32) []float32 {
		x := make([]float32, 32)
		for j := range x {
			x[j] = f(j)
		}
		return x
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	cases := []struct {
		name string
		x    []float32
	}{
		{"normal", block(func(int) float32 { return float32(r.NormFloat64()) })},
		{"zeros", make([]float32, 32)},
		{"ties", block(func(j int) float32 { return float32(j) - 15.5 })}, // x*id lands on .5 for many j
		{"tiny", block(func(j int) float32 { return float32(j) * 1e-40 })},
		{"huge", block(func(j int) float32 { return float32(j-16) * 1e37 })},
		{"nan", block(func(j int) float32 {
			if j == 7 {
				return nan
			}
			return float32(j)
		})},
		{"inf", block(func(j int) float32 {
			if j == 3 {
				return -inf
			}
			return 1
		})},
		{"two blocks", block(func(j int) float32 { return float32(r.NormFloat64() * 100) })},
	}
	cases[len(cases)-1].x = append(cases[len(cases)-1].x, cases[0].x...)
	for _, lvl := range levels(t) {
		k := newKernels(lvl)
		for _, c := range cases {
			t.Run(fmt.Sprintf("%v/%s", lvl, c.name), func(t *testing.T) {
				want := generic.quantQ8A(c.x)
				got := k.quantQ8A(slices.Clone(c.x))
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("quantized bytes differ (-want +got):\n%s", diff)
				}
			})
		}
		k.free()
	}
}
