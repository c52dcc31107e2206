// elementwise.cu: embedding, RMSNorm, RoPE, residual add, SwiGLU, gather and
// KV stores. Every kernel computes each output row independently of the
// others, with a fixed reduction order, so results are batch-invariant.
#include <math.h>

#include "common.cuh"
#include "kquant.cuh"
#include "legacy.cuh"

// tc_weight_value dequantizes element (row, col) of a repacked weight.
static __device__ float tc_weight_value(const void *w, int type, int rows, int cols, int row, int col) {
	const uint8_t *base = (const uint8_t *)w;
	switch (type) {
	case TC_F32:
		return ((const float *)w)[(size_t)row * cols + col];
	case TC_F16:
		return __half2float(((const half *)w)[(size_t)row * cols + col]);
	case TC_BF16:
		return tc_bf16(((const uint16_t *)w)[(size_t)row * cols + col]);
	default:
		break;
	}
	int bv = tc_block_values(type);
	size_t nb = (size_t)rows * (size_t)(cols / bv);
	size_t b = (size_t)row * (size_t)(cols / bv) + (size_t)(col / bv);
	int j = col % bv;
	const uint8_t *qs = base + b * tc_qs_bytes(type);
	const uint8_t *sc = base + nb * tc_qs_bytes(type) + b * tc_scale_bytes(type);
	if (tc_is_kquant(type)) return tc_kweight_value(qs, sc, type, j);
	return tc_qweight_value(qs, sc, type, j);
}

__global__ void k_embed(float *dst, const void *table, int type, int rows, int cols, const int32_t *ids) {
	int t = blockIdx.x;
	int id = ids[t];
	for (int c = threadIdx.x; c < cols; c += blockDim.x) {
		dst[(size_t)t * cols + c] = tc_weight_value(table, type, rows, cols, id, c);
	}
}

extern "C" int tandem_cuda_embed(tc_ctx *c, float *d_dst, const void *d_table, int type,
                                 int rows, int cols, const int32_t *h_ids, int n) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n <= 0) return TC_OK;
	if (tc_is_quant(type) && cols % tc_block_values(type) != 0) return TC_ERR_ARG;
	void *ids;
	rc = tc_stage(c, 0, h_ids, (size_t)n * sizeof(int32_t), &ids);
	if (rc != TC_OK) return rc;
	k_embed<<<n, 256, 0, c->stream>>>(d_dst, d_table, type, rows, cols, (const int32_t *)ids);
	return tc_launched();
}

// One block per row. Each thread sums squares over a fixed stride, then a
// fixed warp/block tree combines them: the order depends only on cols.
__global__ void k_rmsnorm(float *dst, const float *x, const float *w, int cols, float eps) {
	__shared__ float part[32];
	const float *in = x + (size_t)blockIdx.x * cols;
	float *out = dst + (size_t)blockIdx.x * cols;
	float ss = 0.f;
	for (int i = threadIdx.x; i < cols; i += blockDim.x) ss = fmaf(in[i], in[i], ss);
	ss = tc_warp_sum(ss);
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	if (lane == 0) part[warp] = ss;
	__syncthreads();
	if (warp == 0) {
		int nw = blockDim.x / 32;
		float v = lane < nw ? part[lane] : 0.f;
		v = tc_warp_sum(v);
		if (lane == 0) part[0] = v;
	}
	__syncthreads();
	float inv = rsqrtf(part[0] / (float)cols + eps);
	for (int i = threadIdx.x; i < cols; i += blockDim.x) out[i] = in[i] * inv * w[i];
}

extern "C" int tandem_cuda_rmsnorm(tc_ctx *c, float *d_dst, const float *d_x, const float *d_w,
                                   int rows, int cols, float eps) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (rows <= 0) return TC_OK;
	k_rmsnorm<<<rows, 256, 0, c->stream>>>(d_dst, d_x, d_w, cols, eps);
	return tc_launched();
}

// Angles follow the reference recurrence theta_i = theta_{i-1} * thetaScale
// in float32 (as ggml does), so both backends rotate by identical angles;
// sin and cos are evaluated in double for accuracy.
__global__ void k_rope(float *x, const int32_t *pos, int heads, int head_dim, int dims,
                       float theta_scale, float freq_scale, int interleaved) {
	int t = blockIdx.x;
	int half_dims = dims / 2;
	float *row = x + (size_t)t * heads * head_dim;
	for (int i = threadIdx.x; i < half_dims; i += blockDim.x) {
		float theta = (float)pos[t] * freq_scale;
		for (int k = 0; k < i; k++) theta *= theta_scale;
		double s, co;
		sincos((double)theta, &s, &co);
		float cs = (float)co, sn = (float)s;
		int a = interleaved ? 2 * i : i;
		int b = interleaved ? 2 * i + 1 : i + half_dims;
		for (int h = 0; h < heads; h++) {
			float *v = row + (size_t)h * head_dim;
			float x0 = v[a], x1 = v[b];
			v[a] = x0 * cs - x1 * sn;
			v[b] = x0 * sn + x1 * cs;
		}
	}
}

extern "C" int tandem_cuda_rope(tc_ctx *c, float *d_x, int t, const int32_t *h_pos, int heads,
                                int head_dim, int dims, float base, float freq_scale, int interleaved) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (t <= 0) return TC_OK;
	if (dims <= 0 || dims % 2 != 0 || dims > head_dim) return TC_ERR_ARG;
	void *pos;
	rc = tc_stage(c, 0, h_pos, (size_t)t * sizeof(int32_t), &pos);
	if (rc != TC_OK) return rc;
	if (freq_scale == 0.f) freq_scale = 1.f;
	float theta_scale = (float)pow((double)base, -2.0 / (double)dims);
	k_rope<<<t, 64, 0, c->stream>>>(d_x, (const int32_t *)pos, heads, head_dim, dims, theta_scale,
	                                 freq_scale, interleaved);
	return tc_launched();
}

__global__ void k_add(float *dst, const float *x, size_t n) {
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) dst[i] += x[i];
}

extern "C" int tandem_cuda_add(tc_ctx *c, float *d_dst, const float *d_x, size_t n) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n == 0) return TC_OK;
	k_add<<<tc_blocks(n, 256), 256, 0, c->stream>>>(d_dst, d_x, n);
	return tc_launched();
}

__global__ void k_swiglu(float *dst, const float *gate, const float *up, size_t n) {
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		float g = gate[i];
		dst[i] = g / (1.f + expf(-g)) * up[i];
	}
}

extern "C" int tandem_cuda_swiglu(tc_ctx *c, float *d_dst, const float *d_gate, const float *d_up, size_t n) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n == 0) return TC_OK;
	k_swiglu<<<tc_blocks(n, 256), 256, 0, c->stream>>>(d_dst, d_gate, d_up, n);
	return tc_launched();
}

__global__ void k_gather(float *dst, const float *src, int cols, const int32_t *rows) {
	int t = blockIdx.x;
	const float *s = src + (size_t)rows[t] * cols;
	for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[(size_t)t * cols + i] = s[i];
}

extern "C" int tandem_cuda_gather(tc_ctx *c, float *d_dst, const float *d_src, int cols,
                                  const int32_t *h_rows, int n) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n <= 0) return TC_OK;
	void *rows;
	rc = tc_stage(c, 0, h_rows, (size_t)n * sizeof(int32_t), &rows);
	if (rc != TC_OK) return rc;
	k_gather<<<n, 256, 0, c->stream>>>(d_dst, d_src, cols, (const int32_t *)rows);
	return tc_launched();
}

// One block per token: converts its key and value rows to half and writes
// them into the token's slot.
__global__ void k_store_kv(uint8_t *layer, int block_size, int kv_heads, int head_dim, const float *k,
                           const float *v, const int32_t *slots) {
	const int t = blockIdx.x;
	const int slot = slots[t];
	const size_t row_elems = (size_t)kv_heads * head_dim;
	const size_t rb = row_elems * 2;
	uint8_t *blk = layer + (size_t)(slot / block_size) * 2 * block_size * rb;
	half *kd = (half *)(blk + (size_t)(slot % block_size) * rb);
	half *vd = (half *)(blk + ((size_t)block_size + slot % block_size) * rb);
	for (size_t i = threadIdx.x; i < row_elems; i += blockDim.x) {
		kd[i] = __float2half_rn(k[t * row_elems + i]);
		vd[i] = __float2half_rn(v[t * row_elems + i]);
	}
}

// Int8 rows: one warp per (key or value, head) vector computes max|x|, the
// scale max/127 and codes round(x * (1/scale)) exactly as the reference
// encoder does, so stored bytes are identical.
__global__ void k_store_kv_int8(uint8_t *layer, int block_size, int kv_heads, int head_dim, const float *k,
                                const float *v, const int32_t *slots) {
	const int t = blockIdx.x;
	const int slot = slots[t];
	const size_t rb = tc_kv_row_bytes(TC_KV_INT8, kv_heads, head_dim);
	uint8_t *blk = layer + (size_t)(slot / block_size) * 2 * block_size * rb;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
	for (int item = warp; item < 2 * kv_heads; item += warps) {
		const int h = item % kv_heads;
		const bool is_v = item >= kv_heads;
		const float *src = (is_v ? v : k) + ((size_t)t * kv_heads + h) * head_dim;
		uint8_t *row = blk + ((is_v ? (size_t)block_size : 0) + slot % block_size) * rb;
		float amax = 0.f;
		for (int i = lane; i < head_dim; i += 32) amax = fmaxf(amax, fabsf(src[i]));
		amax = tc_warp_max(amax);
		const float scale = amax / 127.f;
		const float inv = scale > 0.f ? 1.f / scale : 0.f;
		int8_t *q = (int8_t *)row + (size_t)h * head_dim;
		for (int i = lane; i < head_dim; i += 32) q[i] = (int8_t)roundf(src[i] * inv);
		if (lane == 0) {
			// Scales are 4-byte values at a possibly unaligned offset
			// (head_dim need not be a multiple of 4): store bytewise.
			uint8_t *sp = row + (size_t)kv_heads * head_dim + 4 * (size_t)h;
			uint32_t bits = __float_as_uint(scale);
			for (int b = 0; b < 4; b++) sp[b] = (uint8_t)(bits >> (8 * b));
		}
	}
}

extern "C" int tandem_cuda_store_kv(tc_ctx *c, void *d_layer, int kv_dtype, int block_size, int kv_heads,
                                    int head_dim, const float *d_k, const float *d_v, const int32_t *h_slots,
                                    int n) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n <= 0) return TC_OK;
	if (block_size <= 0 || kv_heads <= 0 || head_dim <= 0) return TC_ERR_ARG;
	if (kv_dtype != TC_KV_F16 && kv_dtype != TC_KV_INT8) return TC_ERR_UNSUPPORTED;
	void *slots;
	rc = tc_stage(c, 0, h_slots, (size_t)n * sizeof(int32_t), &slots);
	if (rc != TC_OK) return rc;
	if (kv_dtype == TC_KV_INT8) {
		k_store_kv_int8<<<n, 128, 0, c->stream>>>((uint8_t *)d_layer, block_size, kv_heads, head_dim, d_k, d_v,
		                                           (const int32_t *)slots);
	} else {
		k_store_kv<<<n, 128, 0, c->stream>>>((uint8_t *)d_layer, block_size, kv_heads, head_dim, d_k, d_v,
		                                      (const int32_t *)slots);
	}
	return tc_launched();
}
