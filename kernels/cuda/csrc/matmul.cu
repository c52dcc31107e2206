// matmul.cu: weight upload (repacking) and the matrix products.
//
// Decode is memory-bound, so the products are written as matrix-vector
// kernels that stream each weight row once per group of up to TC_MAX_COLS
// tokens: one warp per output row. The quantized kernels and their design
// are in legacy.cuh (32-value blocks) and kquant.cuh (K-quants); the float
// kernels below accumulate with a fixed per-lane order and a fixed butterfly,
// so they are batch-invariant too.
#include "common.cuh"
#include "legacy.cuh"

extern "C" int tandem_cuda_weight_bytes(int type, int rows, int cols, size_t *out) {
	if (out == nullptr || rows <= 0 || cols <= 0) return TC_ERR_ARG;
	size_t n = (size_t)rows * (size_t)cols;
	switch (type) {
	case TC_F32:
		*out = n * 4;
		return TC_OK;
	case TC_F16:
	case TC_BF16:
		*out = n * 2;
		return TC_OK;
	case TC_Q4_0:
	case TC_Q4_1:
	case TC_Q5_0:
	case TC_Q5_1:
	case TC_Q8_0:
	case TC_Q4_K:
	case TC_Q5_K:
	case TC_Q6_K:
		if (cols % tc_block_values(type) != 0) return TC_ERR_ARG;
		*out = n / tc_block_values(type) * (tc_qs_bytes(type) + tc_scale_bytes(type));
		return TC_OK;
	}
	return TC_ERR_UNSUPPORTED;
}

// k_repack repacks n ggml blocks (tc_repack_block), one thread per block.
__global__ void k_repack(uint8_t *qs, uint8_t *sc, const uint8_t *src, size_t n, int type) {
	size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (b < n) tc_repack_block(qs, sc, src, b, type);
}

extern "C" int tandem_cuda_weight_load(tc_ctx *c, void *d_w, int type, int rows, int cols,
                                       const void *h_src, size_t src_bytes) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	size_t dev_bytes;
	rc = tandem_cuda_weight_bytes(type, rows, cols, &dev_bytes);
	if (rc != TC_OK) return rc;
	if (!tc_is_quant(type)) {
		if (src_bytes != dev_bytes) return TC_ERR_ARG;
		TC_CHECK(cudaMemcpyAsync(d_w, h_src, src_bytes, cudaMemcpyHostToDevice, c->stream));
		TC_CHECK(cudaStreamSynchronize(c->stream));
		return TC_OK;
	}
	size_t gb = tc_ggml_block_bytes(type), qsb = tc_qs_bytes(type), scb = tc_scale_bytes(type);
	size_t nb = (size_t)rows * (size_t)cols / tc_block_values(type);
	if (src_bytes != nb * gb) return TC_ERR_ARG;
	// Stage through scratch in chunks so that a multi-GiB weight does not
	// need twice its size in device memory.
	const size_t chunk = (size_t)1 << 20;
	void *tmp;
	rc = tc_scratch(c, (nb < chunk ? nb : chunk) * gb, &tmp);
	if (rc != TC_OK) return rc;
	uint8_t *qs = (uint8_t *)d_w, *sc = (uint8_t *)d_w + nb * qsb;
	for (size_t b0 = 0; b0 < nb; b0 += chunk) {
		size_t n = nb - b0 < chunk ? nb - b0 : chunk;
		TC_CHECK(cudaMemcpyAsync(tmp, (const uint8_t *)h_src + b0 * gb, n * gb, cudaMemcpyHostToDevice,
		                         c->stream));
		k_repack<<<tc_blocks(n, 256), 256, 0, c->stream>>>(qs + b0 * qsb, sc + b0 * scb,
		                                                     (const uint8_t *)tmp, n, type);
		rc = tc_launched();
		if (rc != TC_OK) return rc;
	}
	TC_CHECK(cudaStreamSynchronize(c->stream));
	return TC_OK;
}

// k_quantize_q8_1: one warp per 32-value block (tc_quantize_q8_1).
__global__ void k_quantize_q8_1(int8_t *qs, half2 *ds, const float *x, size_t nblocks) {
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i / 32 >= nblocks) return; // whole warps exit together: 32 | blockDim
	tc_quantize_q8_1(qs, ds, x, i);
}

template <int TYPE>
static __device__ __forceinline__ void tc_load8(const void *w, size_t i, float *out) {
	if (TYPE == TC_F32) {
		float4 a = ((const float4 *)w)[i / 4], b = ((const float4 *)w)[i / 4 + 1];
		out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
		out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
		return;
	}
	uint4 u = *(const uint4 *)((const uint16_t *)w + i);
	uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
	for (int k = 0; k < 4; k++) {
		if (TYPE == TC_F16) {
			float2 f = __half22float2(*(const half2 *)&v[k]);
			out[2 * k] = f.x, out[2 * k + 1] = f.y;
		} else {
			out[2 * k] = __uint_as_float(v[k] << 16);
			out[2 * k + 1] = __uint_as_float(v[k] & 0xFFFF0000u);
		}
	}
}

template <int TYPE>
static __device__ __forceinline__ float tc_load1(const void *w, size_t i) {
	if (TYPE == TC_F32) return ((const float *)w)[i];
	if (TYPE == TC_F16) return __half2float(((const half *)w)[i]);
	return tc_bf16(((const uint16_t *)w)[i]);
}

// k_mvf: float weights (F32/F16/BF16) times f32 activations. VEC kernels
// read 8 values per lane per step with 128-bit loads (cols % 8 == 0).
template <int TYPE, int NC, bool VEC>
__global__ void __launch_bounds__(TC_MV_WARPS * 32)
    k_mvf(float *dst, const void *w, const float *x, int rows, int cols, int t0) {
	int row = blockIdx.x * TC_MV_WARPS + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= rows) return;
	int t = t0 + blockIdx.y * NC;
	size_t wrow = (size_t)row * cols;
	float acc[NC];
#pragma unroll
	for (int c = 0; c < NC; c++) acc[c] = 0.f;
	if (VEC) {
		for (int i = lane * 8; i < cols; i += 32 * 8) {
			float wv[8];
			tc_load8<TYPE>(w, wrow + i, wv);
#pragma unroll
			for (int c = 0; c < NC; c++) {
				const float4 *xp = (const float4 *)(x + (size_t)(t + c) * cols + i);
				float4 a = xp[0], b = xp[1];
				float s = acc[c];
				s = fmaf(wv[0], a.x, s);
				s = fmaf(wv[1], a.y, s);
				s = fmaf(wv[2], a.z, s);
				s = fmaf(wv[3], a.w, s);
				s = fmaf(wv[4], b.x, s);
				s = fmaf(wv[5], b.y, s);
				s = fmaf(wv[6], b.z, s);
				s = fmaf(wv[7], b.w, s);
				acc[c] = s;
			}
		}
	} else {
		for (int i = lane; i < cols; i += 32) {
			float wv = tc_load1<TYPE>(w, wrow + i);
#pragma unroll
			for (int c = 0; c < NC; c++) acc[c] = fmaf(wv, x[(size_t)(t + c) * cols + i], acc[c]);
		}
	}
#pragma unroll
	for (int c = 0; c < NC; c++) {
		float v = tc_warp_sum(acc[c]);
		if (lane == 0) dst[(size_t)(t + c) * rows + row] = v;
	}
}

// Tokens are processed in groups of NC per warp so that each weight block
// read from memory serves NC tokens. A batch of t tokens is cut into launches
// of TC_MAX_COLS-token groups and then 8, 4, 2, 1 for the remainder; a token's
// result does not depend on the group it lands in.
template <int TYPE, int NC>
static void tc_launch_q1(tc_ctx *c, float *dst, const uint8_t *w, const int8_t *qs, const half2 *ds, int groups,
                         int t0, int rows, int nbr) {
	dim3 grid(tc_blocks((size_t)rows, TC_MV_WARPS), groups);
	k_mmvq<TYPE, NC><<<grid, TC_MV_WARPS * 32, 0, c->stream>>>(dst, w, qs, ds, rows, nbr, t0);
}

template <int TYPE>
static int tc_launch_q(tc_ctx *c, float *dst, const uint8_t *w, const int8_t *qs, const half2 *ds, int t,
                       int rows, int nbr) {
	int full = t / TC_MAX_COLS, t0 = full * TC_MAX_COLS;
	if (full > 0) tc_launch_q1<TYPE, TC_MAX_COLS>(c, dst, w, qs, ds, full, 0, rows, nbr);
	if (t - t0 >= 8) tc_launch_q1<TYPE, 8>(c, dst, w, qs, ds, 1, t0, rows, nbr), t0 += 8;
	if (t - t0 >= 4) tc_launch_q1<TYPE, 4>(c, dst, w, qs, ds, 1, t0, rows, nbr), t0 += 4;
	if (t - t0 >= 2) tc_launch_q1<TYPE, 2>(c, dst, w, qs, ds, 1, t0, rows, nbr), t0 += 2;
	if (t - t0 >= 1) tc_launch_q1<TYPE, 1>(c, dst, w, qs, ds, 1, t0, rows, nbr);
	return tc_launched();
}

template <int TYPE, int NC, bool VEC>
static void tc_launch_f1(tc_ctx *c, float *dst, const void *w, const float *x, int groups, int t0, int rows,
                         int cols) {
	dim3 grid(tc_blocks((size_t)rows, TC_MV_WARPS), groups);
	k_mvf<TYPE, NC, VEC><<<grid, TC_MV_WARPS * 32, 0, c->stream>>>(dst, w, x, rows, cols, t0);
}

template <int TYPE, bool VEC>
static int tc_launch_f(tc_ctx *c, float *dst, const void *w, const float *x, int t, int rows, int cols) {
	int full = t / TC_MAX_COLS, t0 = full * TC_MAX_COLS;
	if (full > 0) tc_launch_f1<TYPE, TC_MAX_COLS, VEC>(c, dst, w, x, full, 0, rows, cols);
	if (t - t0 >= 8) tc_launch_f1<TYPE, 8, VEC>(c, dst, w, x, 1, t0, rows, cols), t0 += 8;
	if (t - t0 >= 4) tc_launch_f1<TYPE, 4, VEC>(c, dst, w, x, 1, t0, rows, cols), t0 += 4;
	if (t - t0 >= 2) tc_launch_f1<TYPE, 2, VEC>(c, dst, w, x, 1, t0, rows, cols), t0 += 2;
	if (t - t0 >= 1) tc_launch_f1<TYPE, 1, VEC>(c, dst, w, x, 1, t0, rows, cols);
	return tc_launched();
}

template <int TYPE>
static int tc_float_matmul(tc_ctx *c, float *dst, const void *w, const float *x, int t, int rows, int cols) {
	if (cols % 8 == 0) return tc_launch_f<TYPE, true>(c, dst, w, x, t, rows, cols);
	return tc_launch_f<TYPE, false>(c, dst, w, x, t, rows, cols);
}

extern "C" int tandem_cuda_matmul(tc_ctx *c, float *d_dst, const float *d_x, int t, const void *d_w, int type,
                                  int rows, int cols) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (t <= 0) return TC_OK;
	if (rows <= 0 || cols <= 0) return TC_ERR_ARG;
	switch (type) {
	case TC_F32: return tc_float_matmul<TC_F32>(c, d_dst, d_w, d_x, t, rows, cols);
	case TC_F16: return tc_float_matmul<TC_F16>(c, d_dst, d_w, d_x, t, rows, cols);
	case TC_BF16: return tc_float_matmul<TC_BF16>(c, d_dst, d_w, d_x, t, rows, cols);
	case TC_Q4_0:
	case TC_Q4_1:
	case TC_Q5_0:
	case TC_Q5_1:
	case TC_Q8_0: break;
	case TC_Q4_K:
	case TC_Q5_K:
	case TC_Q6_K:
		if (cols % 256 != 0) return TC_ERR_ARG;
		return tc_matmul_k(c, d_dst, d_x, t, (const uint8_t *)d_w, type, rows, cols);
	default: return TC_ERR_UNSUPPORTED;
	}
	if (cols % 32 != 0) return TC_ERR_ARG;
	int nbr = cols / 32;
	size_t nblocks = (size_t)t * nbr;
	void *scratch;
	rc = tc_scratch(c, nblocks * 36, &scratch);
	if (rc != TC_OK) return rc;
	int8_t *qs = (int8_t *)scratch;
	half2 *ds = (half2 *)((uint8_t *)scratch + nblocks * 32);
	k_quantize_q8_1<<<tc_blocks(nblocks * 32, 256), 256, 0, c->stream>>>(qs, ds, d_x, nblocks);
	rc = tc_launched();
	if (rc != TC_OK) return rc;
	const uint8_t *w = (const uint8_t *)d_w;
	switch (type) {
	case TC_Q4_0: return tc_launch_q<TC_Q4_0>(c, d_dst, w, qs, ds, t, rows, nbr);
	case TC_Q4_1: return tc_launch_q<TC_Q4_1>(c, d_dst, w, qs, ds, t, rows, nbr);
	case TC_Q5_0: return tc_launch_q<TC_Q5_0>(c, d_dst, w, qs, ds, t, rows, nbr);
	case TC_Q5_1: return tc_launch_q<TC_Q5_1>(c, d_dst, w, qs, ds, t, rows, nbr);
	default: return tc_launch_q<TC_Q8_0>(c, d_dst, w, qs, ds, t, rows, nbr);
	}
}
