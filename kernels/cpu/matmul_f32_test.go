package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/ref"
)

// With full-precision activations the only error left is float32
// accumulation: compare against the float64 dot product of the dequantized
// weights and the unrounded activations, and against kernels/ref's f32 path.
func TestMatMulF32ActivationsMatchExact(t *testing.T) {
	rb := ref.New()
	for _, lvl := range levels(t) {
		b := newBackend(t, Config{Threads: 2, MaxLevel: lvl, Activations: kernels.ActF32})
		for _, typ := range allTypes {
			for _, sh := range mmShapes {
				cols := colsFor(typ, sh.colBlocks)
				t.Run(fmt.Sprintf("%v/%v/%dx%d/T=%d", lvl, typ, sh.rows, cols, sh.T), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(sh.rows*17+cols), uint64(typ)+100))
					wdata := randWeights(r, typ, sh.rows, cols)
					x := randVec(r, sh.T*cols, 1)
					got := runMatMul(t, b, typ, wdata, sh.rows, cols, x, sh.T)
					want := runMatMul(t, rb, typ, wdata, sh.rows, cols, x, sh.T)
					w := dequantRows(t, typ, wdata, sh.rows, cols)
					for tt := 0; tt < sh.T; tt++ {
						for o := 0; o < sh.rows; o++ {
							var exact, mag float64
							for j := 0; j < cols; j++ {
								p := float64(w[o*cols+j]) * float64(x[tt*cols+j])
								exact += p
								mag += math.Abs(p)
							}
							tol := 2e-5*mag + 1e-6
							if g := float64(got[tt*sh.rows+o]); math.Abs(g-exact) > tol {
								t.Fatalf("row %d out %d: got %g, exact %g (tol %g)", tt, o, g, exact, tol)
							}
							if g, rf := float64(got[tt*sh.rows+o]), float64(want[tt*sh.rows+o]); math.Abs(g-rf) > 2*tol {
								t.Fatalf("row %d out %d: got %g, ref %g (tol %g)", tt, o, g, rf, 2*tol)
							}
						}
					}
				})
			}
		}
	}
}
