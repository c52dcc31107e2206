package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
)

// Tolerances of MatMul (documented in docs/architecture.md, CPU kernels):
//   - against the exact (float64) dot product of the dequantized weights and
//     the activations as the backend quantized them: 2e-5 of Σ|w·x| + 1e-6,
//     the float32 rounding of per-block accumulation;
//   - against kernels/ref, which quantizes activations the ggml way (f16
//     scale, round half away): one activation quantization step per element,
//     Σ|w_j|·amax_block(j)/127, plus 1e-3 of Σ|w·x| for the f16 scale.
const (
	exactRel = 2e-5
	exactAbs = 1e-6
)

type mmShape struct{ rows, colBlocks, T int }

// mmShapes cover partial and whole tiles of every level: 4x4 column-lane
// tiles, and the AVX-512 row-lane tiles of 16 weight rows by up to 16
// activation rows (33 rows: two whole tiles and a one-row tail; T=33: two
// whole activation panels and one row).
var mmShapes = []mmShape{{1, 1, 1}, {7, 2, 3}, {13, 1, 17}, {64, 3, 64}, {5, 2, 2}, {33, 3, 16}, {16, 1, 33}}

func colsFor(typ quant.Type, blocks int) int {
	switch typ {
	case quant.F32, quant.F16, quant.BF16:
		return 37 * blocks // not a multiple of 8: exercises the SIMD tails
	}
	return typ.BlockSize() * blocks
}

func TestMatMulMatchesReference(t *testing.T) {
	rb := ref.NewWith(kernels.ActQ8)
	for _, lvl := range levels(t) {
		b := newBackend(t, Config{Threads: 2, MaxLevel: lvl, Activations: kernels.ActQ8})
		for _, typ := range allTypes {
			for _, sh := range mmShapes {
				cols := colsFor(typ, sh.colBlocks)
				name := fmt.Sprintf("%v/%v/%dx%d/T=%d", lvl, typ, sh.rows, cols, sh.T)
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(sh.rows*131+cols), uint64(typ)))
					wdata := randWeights(r, typ, sh.rows, cols)
					x := randVec(r, sh.T*cols, 1)
					got := runMatMul(t, b, typ, wdata, sh.rows, cols, x, sh.T)
					want := runMatMul(t, rb, typ, wdata, sh.rows, cols, x, sh.T)
					checkMatMul(t, typ, dequantRows(t, typ, wdata, sh.rows, cols), x, sh.rows, cols, sh.T, got, want)
				})
			}
		}
	}
}

func runMatMul(t *testing.T, b kernels.Backend, typ quant.Type, wdata []byte, rows, cols int, x []float32, T int) []float32 {
	t.Helper()
	w, err := b.NewWeight(typ, rows, cols, wdata)
	if err != nil {
		t.Fatalf("%s.NewWeight: %v", b.Name(), err)
	}
	dst := b.NewTensor(T, rows)
	b.MatMul(dst, tensorOf(b, T, cols, x), w)
	return readAll(b, dst)
}

// checkMatMul compares got against the exact dot products of the values the
// backend multiplies and against the reference backend's want.
func checkMatMul(t *testing.T, typ quant.Type, w, x []float32, rows, cols, T int, got, want []float32) {
	t.Helper()
	blk := actBlock(typ)
	bad := 0
	for tt := 0; tt < T; tt++ {
		xr := x[tt*cols : (tt+1)*cols]
		xq := make([]float64, cols)
		if blk == 0 {
			for i, v := range xr {
				xq[i] = float64(v)
			}
		} else {
			xq = simQuant(xr, blk)
		}
		for o := 0; o < rows; o++ {
			wr := w[o*cols : (o+1)*cols]
			var exact, mag, step float64
			for i := range wr {
				exact += float64(wr[i]) * xq[i]
				mag += math.Abs(float64(wr[i]) * float64(xr[i]))
			}
			if blk != 0 {
				for b0 := 0; b0 < cols; b0 += blk {
					var amax, wsum float64
					for i := b0; i < b0+blk; i++ {
						amax = max(amax, math.Abs(float64(xr[i])))
						wsum += math.Abs(float64(wr[i]))
					}
					step += wsum * amax / 127
				}
			}
			g, rf := float64(got[tt*rows+o]), float64(want[tt*rows+o])
			if d := math.Abs(g - exact); !(d <= exactRel*mag+exactAbs) {
				if bad++; bad <= 5 {
					t.Errorf("row %d out %d: got %g, exact %g (|diff| %g > tol %g)", tt, o, g, exact, d, exactRel*mag+exactAbs)
				}
			}
			if d := math.Abs(g - rf); !(d <= step+1e-3*mag+exactAbs) {
				if bad++; bad <= 5 {
					t.Errorf("row %d out %d: got %g, ref %g (|diff| %g > tol %g)", tt, o, g, rf, d, step+1e-3*mag+exactAbs)
				}
			}
		}
	}
}

// TestMatMulBatchInvariant checks that every activation row gives
// bit-identical outputs alone (T=1), in batches of several sizes and in
// reversed order, for every type and level.
func TestMatMulBatchInvariant(t *testing.T) {
	for _, lvl := range levels(t) {
		for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
			b := newBackend(t, Config{Threads: 3, MaxLevel: lvl, Activations: act})
			for _, typ := range allTypes {
				t.Run(fmt.Sprintf("%v/%v/%v", lvl, act, typ), func(t *testing.T) {
					r := rand.New(rand.NewPCG(7, uint64(typ)))
					const rows, T = 23, 19
					cols := colsFor(typ, 2)
					wdata := randWeights(r, typ, rows, cols)
					x := randVec(r, T*cols, 1)
					single := make([]float32, 0, T*rows)
					for tt := 0; tt < T; tt++ {
						single = append(single, runMatMul(t, b, typ, wdata, rows, cols, x[tt*cols:(tt+1)*cols], 1)...)
					}
					for _, n := range []int{2, 5, 17, T} {
						got := runMatMul(t, b, typ, wdata, rows, cols, x[:n*cols], n)
						if !slices.Equal(got, single[:n*rows]) {
							t.Errorf("T=%d batch differs from T=1 rows", n)
						}
					}
					rev := make([]float32, 0, len(x))
					for tt := T - 1; tt >= 0; tt-- {
						rev = append(rev, x[tt*cols:(tt+1)*cols]...)
					}
					got := runMatMul(t, b, typ, wdata, rows, cols, rev, T)
					for tt := 0; tt < T; tt++ {
						if !slices.Equal(got[(T-1-tt)*rows:(T-tt)*rows], single[tt*rows:(tt+1)*rows]) {
							t.Errorf("row %d differs when the batch is reversed", tt)
						}
					}
				})
			}
		}
	}
}

// TestMatMulThreadsAgree checks that the thread count does not change any
// output bit (rows are split between threads, never reductions).
func TestMatMulThreadsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, cols, T = 37, 96, 9
	wdata := randWeights(r, quant.Q4_1, rows, cols)
	x := randVec(r, T*cols, 1)
	for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
		var first []float32
		for _, n := range []int{1, 2, 3, 8} {
			b := newBackend(t, Config{Threads: n, MaxLevel: LevelAVX512, Activations: act})
			got := runMatMul(t, b, quant.Q4_1, wdata, rows, cols, x, T)
			if first == nil {
				first = got
			} else if !slices.Equal(got, first) {
				t.Errorf("%v: Threads=%d differs from Threads=1", act, n)
			}
		}
	}
}
