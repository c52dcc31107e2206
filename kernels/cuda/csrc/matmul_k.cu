// matmul_k.cu: products with K-quant weights (Q4_K, Q5_K, Q6_K); the device
// code and its design are in kquant.cuh.
#include "common.cuh"
#include "kquant.cuh"

// k_quantize_q8_k: one warp per 256-value block (tc_quantize_q8_k).
__global__ void k_quantize_q8_k(int8_t *qs, float *d, int16_t *bsums, const float *x, size_t nblocks) {
	size_t blk = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
	if (blk >= nblocks) return; // whole warps exit together: 32 | blockDim
	tc_quantize_q8_k(qs, d, bsums, x, blk, threadIdx.x % 32);
}

template <int TYPE, int NC>
static void tc_launch_k1(tc_ctx *c, float *dst, const uint8_t *w, tc_q8k x, int groups, int t0, int rows,
                         int nbr) {
	dim3 grid(tc_blocks((size_t)rows, TC_MV_WARPS), groups);
	k_mmvq_k<TYPE, NC><<<grid, TC_MV_WARPS * 32, 0, c->stream>>>(dst, w, x, rows, nbr, t0);
}

// Token groups as in matmul.cu: TC_MAX_COLS at a time, then 8, 4, 2, 1.
template <int TYPE>
static int tc_launch_k(tc_ctx *c, float *dst, const uint8_t *w, tc_q8k x, int t, int rows, int nbr) {
	int full = t / TC_MAX_COLS, t0 = full * TC_MAX_COLS;
	if (full > 0) tc_launch_k1<TYPE, TC_MAX_COLS>(c, dst, w, x, full, 0, rows, nbr);
	if (t - t0 >= 8) tc_launch_k1<TYPE, 8>(c, dst, w, x, 1, t0, rows, nbr), t0 += 8;
	if (t - t0 >= 4) tc_launch_k1<TYPE, 4>(c, dst, w, x, 1, t0, rows, nbr), t0 += 4;
	if (t - t0 >= 2) tc_launch_k1<TYPE, 2>(c, dst, w, x, 1, t0, rows, nbr), t0 += 2;
	if (t - t0 >= 1) tc_launch_k1<TYPE, 1>(c, dst, w, x, 1, t0, rows, nbr);
	return tc_launched();
}

int tc_matmul_k(tc_ctx *c, float *dst, const float *x, int t, const uint8_t *w, int type, int rows, int cols) {
	int nbr = cols / TC_QK;
	size_t nblocks = (size_t)t * nbr;
	void *scratch;
	// Codes first (256 bytes a block keeps them 16-byte aligned), then the
	// scales, then the run sums.
	int rc = tc_scratch(c, nblocks * (TC_QK + sizeof(float) + 16 * sizeof(int16_t)), &scratch);
	if (rc != TC_OK) return rc;
	int8_t *qs = (int8_t *)scratch;
	float *d = (float *)(qs + nblocks * TC_QK);
	int16_t *bsums = (int16_t *)(d + nblocks);
	k_quantize_q8_k<<<tc_blocks(nblocks * 32, 256), 256, 0, c->stream>>>(qs, d, bsums, x, nblocks);
	rc = tc_launched();
	if (rc != TC_OK) return rc;
	tc_q8k act = {qs, d, bsums};
	switch (type) {
	case TC_Q4_K: return tc_launch_k<TC_Q4_K>(c, dst, w, act, t, rows, nbr);
	case TC_Q5_K: return tc_launch_k<TC_Q5_K>(c, dst, w, act, t, rows, nbr);
	case TC_Q6_K: return tc_launch_k<TC_Q6_K>(c, dst, w, act, t, rows, nbr);
	}
	return TC_ERR_UNSUPPORTED;
}
