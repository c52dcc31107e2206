// common.cuh: definitions shared by the kernel translation units.
#ifndef TANDEM_COMMON_CUH
#define TANDEM_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#include "tandem_cuda.h"

struct tc_ctx {
	int device;
	cudaStream_t stream;
	// scratch holds per-call small arrays (ids, positions, slots, attention
	// tasks) and quantized activations. Reuse is safe because every use is
	// ordered on the one stream.
	void *scratch;
	size_t scratch_bytes;
	// attn holds the last attention work list and its partial results; it
	// survives other calls, so a work list reused across layers is copied
	// once.
	void *attn;
	size_t attn_bytes;
};

// TC_CHECK returns a failing cudaError_t from the enclosing function.
#define TC_CHECK(expr)                                   \
	do {                                                 \
		cudaError_t tc_err_ = (expr);                    \
		if (tc_err_ != cudaSuccess) return (int)tc_err_; \
	} while (0)

// tc_enter makes the context's device current; callers may have moved to
// another OS thread since the last call.
static inline int tc_enter(tc_ctx *c) {
	if (c == nullptr) return TC_ERR_ARG;
	TC_CHECK(cudaSetDevice(c->device));
	return TC_OK;
}

// tc_launched reports a launch failure (bad configuration) right away;
// failures inside the kernel surface at the next synchronisation.
static inline int tc_launched(void) { return (int)cudaGetLastError(); }

// tc_scratch returns a device buffer of at least bytes, growing the context's
// scratch when needed. Growing frees the old buffer, which cudaFree only does
// once the device is idle, so in-flight kernels never see it vanish.
int tc_scratch(tc_ctx *c, size_t bytes, void **out);

// tc_stage copies a host array into scratch at byte offset off (which must be
// 16-byte aligned) and returns its device address.
int tc_stage(tc_ctx *c, size_t off, const void *h, size_t bytes, void **out);

// Device-side Q8_1 activation block, as in ggml: scale d and d*sum(q) as
// halves, then 32 int8 codes. 36 bytes, so blocks are 4-byte aligned.
struct __align__(4) tc_q8_1 {
	half2 ds;
	int8_t qs[32];
};

// Repacked quantized weights: for nb = rows*cols/tc_block_values blocks, an
// array of quant payloads (16-byte aligned rows of blocks) followed by the
// scales.
//   Q4_0: qs[nb][16] bytes, then d[nb] halves.
//   Q4_1: qs[nb][16] bytes, then dm[nb] half2 (d, m).
//   Q8_0: qs[nb][32] bytes, then d[nb] halves.
//   Q5_0: qs[nb][16] bytes (the low nibbles), then [nb][6]: d (half), qh.
//   Q5_1: qs[nb][16] bytes, then [nb][8]: d, m (halves), qh.
// Q5_0/Q5_1's qh is ggml's 32 fifth bits transposed (tc_qh_transpose): the
// bit of value j at bit 8*(j%4) + j/4, little-endian.
// The K-quants keep ggml's byte order inside each part:
//   Q4_K: qs[nb][128], then [nb][16]: d, dmin (halves), 12 packed scales.
//   Q5_K: [nb][160]: qh[32] then qs[128], then [nb][16] as Q4_K.
//   Q6_K: [nb][192]: ql[128] then qh[64], then [nb][18]: 16 int8 scales, d.
static inline __host__ __device__ size_t tc_qs_bytes(int type) {
	switch (type) {
	case TC_Q8_0: return 32;
	case TC_Q4_K: return 128;
	case TC_Q5_K: return 160;
	case TC_Q6_K: return 192;
	}
	return 16;
}
static inline __host__ __device__ size_t tc_scale_bytes(int type) {
	switch (type) {
	case TC_Q4_1: return 4;
	case TC_Q5_0: return 6;
	case TC_Q5_1: return 8;
	case TC_Q4_K:
	case TC_Q5_K: return 16;
	case TC_Q6_K: return 18;
	}
	return 2;
}
static inline __host__ __device__ bool tc_is_kquant(int type) {
	return type == TC_Q4_K || type == TC_Q5_K || type == TC_Q6_K;
}
static inline __host__ __device__ bool tc_is_quant(int type) {
	return type == TC_Q4_0 || type == TC_Q4_1 || type == TC_Q5_0 || type == TC_Q5_1 || type == TC_Q8_0 ||
	       tc_is_kquant(type);
}
// tc_block_values is the number of values one quantized block encodes.
static inline __host__ __device__ int tc_block_values(int type) {
	return tc_is_kquant(type) ? 256 : 32;
}
static inline __host__ __device__ size_t tc_elem_bytes(int type) {
	return type == TC_F32 ? 4 : 2;
}

// tc_kv_row_bytes is the size of one token's keys (or values).
static inline __host__ __device__ size_t tc_kv_row_bytes(int kv_dtype, int kv_heads, int head_dim) {
	return kv_dtype == TC_KV_INT8 ? (size_t)kv_heads * (head_dim + 4) : (size_t)kv_heads * head_dim * 2;
}

static __device__ __forceinline__ float tc_bf16(uint16_t v) {
	return __uint_as_float(((uint32_t)v) << 16);
}

static __device__ __forceinline__ float tc_warp_sum(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

static __device__ __forceinline__ float tc_warp_max(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

// tc_ggml_block_bytes is the size of one block in the ggml (file) encoding.
static inline __host__ __device__ size_t tc_ggml_block_bytes(int type) {
	return tc_is_quant(type) ? tc_qs_bytes(type) + tc_scale_bytes(type) : 0;
}

// tc_qh_transpose moves bit j of a Q5_0/Q5_1 block's qh (value j's fifth
// bit) to bit 8*(j%4) + j/4: the bits of the four values a dp4a word holds
// (values 4k..4k+3) then sit at bit k of each byte, one shift and one mask
// from their place. Done once, at load.
static __host__ __device__ __forceinline__ uint32_t tc_qh_transpose(uint32_t qh) {
	uint32_t t = 0;
	for (int j = 0; j < 32; j++) t |= ((qh >> j) & 1u) << (8 * (j % 4) + j / 4);
	return t;
}

// tc_repack_block splits ggml block b of src into its quant payload (in qs)
// and its scales (in sc): the repacked layout above. A ggml block starts with
// its scales, except Q6_K's, which ends with them; Q5_0/Q5_1's scale record
// ends with qh, which is transposed.
static __device__ __forceinline__ void tc_repack_block(uint8_t *qs, uint8_t *sc, const uint8_t *src, size_t b,
                                                       int type) {
	size_t qsb = tc_qs_bytes(type), scb = tc_scale_bytes(type);
	const uint8_t *s = src + b * (qsb + scb);
	size_t sc_off = type == TC_Q6_K ? qsb : 0, qs_off = type == TC_Q6_K ? 0 : scb;
	for (size_t i = 0; i < scb; i++) sc[b * scb + i] = s[sc_off + i];
	for (size_t i = 0; i < qsb; i++) qs[b * qsb + i] = s[qs_off + i];
	if (type == TC_Q5_0 || type == TC_Q5_1) {
		uint8_t *h = sc + b * scb + scb - 4;
		uint32_t qh = tc_qh_transpose((uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24);
		for (int i = 0; i < 4; i++) h[i] = (uint8_t)(qh >> (8 * i));
	}
}

// Matrix-vector kernels: warps per thread block (one warp per output row),
// and the most tokens one warp multiplies per weight read.
#define TC_MV_WARPS 4
#define TC_MAX_COLS 16

// tc_matmul_k is tandem_cuda_matmul for the K-quant weight types
// (matmul_k.cu); the caller has checked the context and the shape.
int tc_matmul_k(tc_ctx *c, float *dst, const float *x, int t, const uint8_t *w, int type, int rows, int cols);

static inline int tc_blocks(size_t n, int threads) {
	return (int)((n + (size_t)threads - 1) / (size_t)threads);
}

#endif
