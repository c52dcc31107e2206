package cpu

/*
#include "tk_ops.h"

size_t tk_matmul_f32act_scratch(const tk_pool *p, const tk_kernels *k, int cols);
int tk_matmul_f32act(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows, int cols,
                     const float *x, int T, float *out, float *deq);
*/
import "C"

// cMatMulF32Act runs the full-precision-activation product; scratch grows
// to the per-thread dequantization tiles it needs.
func cMatMulF32Act(p *cPool, k *cKernels, typ uint32, w []byte, rows, cols int, x []float32, T int, out []float32, scratch *[]float32) bool {
	need := int(C.tk_matmul_f32act_scratch(p.p, k.k, C.int(cols))) / 4
	if len(*scratch) < need {
		*scratch = make([]float32, need)
	}
	return C.tk_matmul_f32act(p.p, k.k, C.int(typ), u8p(w), C.int(rows), C.int(cols), f32p(x), C.int(T), f32p(out), f32p(*scratch)) == 0
}
