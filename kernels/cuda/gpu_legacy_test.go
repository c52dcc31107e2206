package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// TestGPULegacyMatchesQuant runs the 32-value formats on the GPU with the
// weight and activation patterns of the emulated test (every fifth-bit
// pattern, extreme and zero scales, zero activation blocks, rounding ties,
// NaN) and holds the results to the same standard as the emulation:
// embedding rows bit-identical to kernels/quant's decoders, products within
// float summation order of kernels/quant.VecDot, and each token's product
// bit-identical whether it is computed in its batch or alone.
func TestGPULegacyMatchesQuant(t *testing.T) {
	b := gpuBackend(t)
	rng := rand.New(rand.NewPCG(41, 42))
	for _, tc := range []legacyCase{
		{quant.Q5_0, 576, 576, 19, 0, 0},
		{quant.Q5_0, 100, 1536, 17, 1, 1},
		{quant.Q5_0, 33, 2048, 5, 2, 2},
		{quant.Q5_0, 7, 32, 1, 1, 0},
		{quant.Q5_1, 576, 576, 19, 1, 1},
		{quant.Q5_1, 100, 1536, 8, 0, 2},
		{quant.Q5_1, 33, 1088, 4, 2, 0},
		{quant.Q4_0, 64, 576, 3, 1, 1},
		{quant.Q4_1, 64, 576, 3, 2, 1},
		{quant.Q8_0, 64, 576, 3, 1, 2},
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
			kw, err := b.NewWeight(tc.typ, tc.rows, tc.cols, w)
			if err != nil {
				t.Fatalf("NewWeight: %v", err)
			}
			defer func() {
				if err := kw.(*Weight).Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			var got legacyResult
			ids := make([]int32, tc.rows)
			for i := range ids {
				ids[i] = int32(i)
			}
			e := b.NewTensor(tc.rows, tc.cols)
			b.Embed(e, kw, ids)
			got.deq = make([]float32, tc.rows*tc.cols)
			b.Read(got.deq, e)

			xt, d := b.NewTensor(tc.tokens, tc.cols), b.NewTensor(tc.tokens, tc.rows)
			b.Write(xt, x)
			b.MatMul(d, xt, kw)
			got.grouped = make([]float32, tc.tokens*tc.rows)
			b.Read(got.grouped, d)
			x1, d1 := b.NewTensor(1, tc.cols), b.NewTensor(1, tc.rows)
			got.single = make([]float32, tc.tokens*tc.rows)
			for i := range tc.tokens {
				b.Write(x1, x[i*tc.cols:(i+1)*tc.cols])
				b.MatMul(d1, x1, kw)
				b.Read(got.single[i*tc.rows:(i+1)*tc.rows], d1)
			}
			if err := b.Err(); err != nil {
				t.Fatal(err)
			}
			checkLegacy(t, tc.typ, tc.rows, tc.cols, w, x, got)
		})
	}
}
