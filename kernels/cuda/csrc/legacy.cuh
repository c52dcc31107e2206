// legacy.cuh: device code for the 32-value block formats (Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0), shared by matmul.cu (products), elementwise.cu (embedding) and
// the host emulation test (kernels/cuda/emu), which compiles it without CUDA.
//
// Decode is memory-bound, so the products are matrix-vector kernels that
// stream each weight row once per group of up to TC_MAX_COLS tokens: one warp
// per output row, each lane reading whole 32-value blocks with 128-bit loads.
// Weights multiply activations quantized to Q8_1 on the device, using dp4a
// integer dot products (as llama.cpp's mmvq does). Q8_1 codes and scale are
// those of the reference's Q8_0 too, so Q4_0/Q5_0/Q8_0 (whose reference pairs
// them with Q8_0) use the same activations and ignore the sum. A lane decodes
// a weight block once into eight words of signed byte codes and reuses them
// for every token of the group; it accumulates its blocks in a fixed order
// and the warp reduces with a fixed butterfly, so each output depends only on
// its own token row: results are batch-invariant.
//
// Q5_0/Q5_1 keep ggml's 16 bytes of low nibbles as the payload; the fifth
// bits travel in the scale record, transposed at load (tc_qh_transpose) so
// that the bits of one dp4a word are one shift and one mask away.
#ifndef TANDEM_LEGACY_CUH
#define TANDEM_LEGACY_CUH

#include <math.h>

#include "common.cuh"

// tc_quantize_q8_1 is thread i of the activation quantizer: one warp per
// 32-value block, as quantize_row_q8_1_ref: d = amax/127, codes round half
// away from zero, and s = d * sum(codes). The codes go to qs (32 bytes per
// block, so kernels read them with 128-bit loads) and (d, s) to ds. NaNs
// are ignored by the maximum and quantize to 0, as in the reference.
static __device__ __forceinline__ void tc_quantize_q8_1(int8_t *qs, half2 *ds, const float *x, size_t i) {
	float v = x[i];
	float amax = tc_warp_max(fabsf(v));
	float d = amax / 127.f;
	float id = d == 0.f ? 0.f : 1.f / d;
	float q = roundf(v * id);
	// A NaN input gives code 0, as in the reference; tested before the clamp,
	// since fmaxf would turn NaN into -128.
	if (q != q) q = 0.f;
	q = fminf(127.f, fmaxf(-128.f, q));
	qs[i] = (int8_t)q;
	float sum = tc_warp_sum(q); // exact: |sum| <= 32*128
	if (i % 32 == 0) ds[i / 32] = __halves2half2(__float2half_rn(d), __float2half_rn(sum * d));
}

// tc_qh_word is the transposed fifth bits (tc_qh_transpose) of a repacked
// Q5_0/Q5_1 scale record: 2-byte aligned in Q5_0's 6-byte records, so read
// as two halves.
template <int TYPE>
static __device__ __forceinline__ uint32_t tc_qh_word(const uint8_t *sc) {
	const uint16_t *h = (const uint16_t *)(sc + (TYPE == TC_Q5_0 ? 2 : 4));
	return (uint32_t)h[0] | (uint32_t)h[1] << 16;
}

// tc_qweight_value dequantizes value j of a repacked 32-value block (qs, sc)
// as kernels/quant's decoders do, in their order of operations (the _rn
// intrinsics are never fused into FMAs).
static __device__ __forceinline__ float tc_qweight_value(const uint8_t *qs, const uint8_t *sc, int type, int j) {
	if (type == TC_Q8_0) return __fmul_rn((float)(int8_t)qs[j], __half2float(*(const half *)sc));
	int q = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
	if (type == TC_Q5_0 || type == TC_Q5_1) {
		uint32_t qh = type == TC_Q5_0 ? tc_qh_word<TC_Q5_0>(sc) : tc_qh_word<TC_Q5_1>(sc);
		q |= (int)((qh >> (8 * (j % 4) + j / 4)) & 1) << 4;
	}
	if (type == TC_Q4_0) return __fmul_rn((float)(q - 8), __half2float(*(const half *)sc));
	if (type == TC_Q5_0) return __fmul_rn((float)(q - 16), __half2float(*(const half *)sc));
	float2 dm = __half22float2(*(const half2 *)sc);
	return __fadd_rn(__fmul_rn((float)q, dm.x), dm.y);
}

// tc_qblock is one weight block as a lane holds it for a token group: the
// signed codes of values 0..15 (lo) and 16..31 (hi) as bytes for dp4a
// (Q8_0: the two halves of its codes), and the scales.
struct tc_qblock {
	int4 lo, hi;
	float2 dm; // d and m (Q4_1, Q5_1); d and 0 otherwise
};

// tc_qh_bytes spreads the fifth bits of dp4a word k (k < 4: low nibbles,
// values 4k..4k+3; k >= 4: high nibbles, values 4k..4k+3 too) to bit 0 of
// each byte: qh is transposed so that value j's bit sits at 8*(j%4) + j/4.
static __device__ __forceinline__ int tc_qh_bytes(uint32_t qh, int k) { return (int)((qh >> k) & 0x01010101u); }

// tc_q5_codes puts the fifth bits on four words of nibbles. Q5_1's codes are
// q = nibble + 16*bit, unsigned below 32 and so valid signed bytes. Q5_0's
// are q - 16: the nibble itself where the bit is set, and nibble - 16 =
// nibble | 0xF0 as a signed byte where it is not, so they are computed from
// the complemented bits times 0xF0 (no carry leaves a byte), without
// per-value branches or byte-wise subtraction.
template <int TYPE>
static __device__ __forceinline__ int4 tc_q5_codes(int4 nib, uint32_t qh, int k0) {
	if (TYPE == TC_Q5_0) {
		return make_int4(nib.x | tc_qh_bytes(qh, k0) * 0xF0, nib.y | tc_qh_bytes(qh, k0 + 1) * 0xF0,
		                 nib.z | tc_qh_bytes(qh, k0 + 2) * 0xF0, nib.w | tc_qh_bytes(qh, k0 + 3) * 0xF0);
	}
	return make_int4(nib.x | tc_qh_bytes(qh, k0) << 4, nib.y | tc_qh_bytes(qh, k0 + 1) << 4,
	                 nib.z | tc_qh_bytes(qh, k0 + 2) << 4, nib.w | tc_qh_bytes(qh, k0 + 3) << 4);
}

template <int TYPE>
static __device__ __forceinline__ tc_qblock tc_qload(const uint8_t *bq, const uint8_t *bs) {
	tc_qblock k;
	if (TYPE == TC_Q8_0) {
		k.lo = ((const int4 *)bq)[0];
		k.hi = ((const int4 *)bq)[1];
		k.dm = make_float2(__half2float(*(const half *)bs), 0.f);
		return k;
	}
	const int4 w = *(const int4 *)bq;
	const int m = 0x0F0F0F0F;
	k.lo = make_int4(w.x & m, w.y & m, w.z & m, w.w & m);
	k.hi = make_int4((w.x >> 4) & m, (w.y >> 4) & m, (w.z >> 4) & m, (w.w >> 4) & m);
	if (TYPE == TC_Q5_0) {
		uint32_t nqh = ~tc_qh_word<TC_Q5_0>(bs);
		k.lo = tc_q5_codes<TC_Q5_0>(k.lo, nqh, 0);
		k.hi = tc_q5_codes<TC_Q5_0>(k.hi, nqh, 4);
	} else if (TYPE == TC_Q5_1) {
		uint32_t qh = tc_qh_word<TC_Q5_1>(bs);
		k.lo = tc_q5_codes<TC_Q5_1>(k.lo, qh, 0);
		k.hi = tc_q5_codes<TC_Q5_1>(k.hi, qh, 4);
	}
	if (TYPE == TC_Q4_1 || TYPE == TC_Q5_1) {
		k.dm = __half22float2(*(const half2 *)bs);
	} else {
		k.dm = make_float2(__half2float(*(const half *)bs), 0.f);
	}
	return k;
}

// tc_qdot is one weight block's contribution for one token, in the
// reference's order of operations (kernels/quant dotQ*). The _rn intrinsics
// are never fused into FMAs, so every instantiation (token group size)
// rounds identically: that is what makes the product batch-invariant bit for
// bit.
template <int TYPE>
static __device__ __forceinline__ float tc_qdot(const tc_qblock &k, const int4 a0, const int4 a1, half2 ads) {
	float2 a = __half22float2(ads);
	int s = __dp4a(k.lo.x, a0.x, 0);
	s = __dp4a(k.lo.y, a0.y, s);
	s = __dp4a(k.lo.z, a0.z, s);
	s = __dp4a(k.lo.w, a0.w, s);
	s = __dp4a(k.hi.x, a1.x, s);
	s = __dp4a(k.hi.y, a1.y, s);
	s = __dp4a(k.hi.z, a1.z, s);
	s = __dp4a(k.hi.w, a1.w, s);
	if (TYPE == TC_Q4_0) {
		// (q-8)*a summed exactly: subtract 8 * sum(a) in integers.
		const int ones = 0x01010101;
		int sa = __dp4a(ones, a0.x, 0);
		sa = __dp4a(ones, a0.y, sa);
		sa = __dp4a(ones, a0.z, sa);
		sa = __dp4a(ones, a0.w, sa);
		sa = __dp4a(ones, a1.x, sa);
		sa = __dp4a(ones, a1.y, sa);
		sa = __dp4a(ones, a1.z, sa);
		sa = __dp4a(ones, a1.w, sa);
		s -= 8 * sa;
	}
	if (TYPE == TC_Q4_1 || TYPE == TC_Q5_1) {
		return __fadd_rn(__fmul_rn(__fmul_rn(k.dm.x, a.x), (float)s), __fmul_rn(k.dm.y, a.y));
	}
	return __fmul_rn(__fmul_rn(k.dm.x, a.x), (float)s);
}

// k_mmvq: dst[t, row] for NC tokens starting at t0 + blockIdx.y*NC; one warp
// per weight row.
template <int TYPE, int NC>
__global__ void __launch_bounds__(TC_MV_WARPS * 32)
    k_mmvq(float *dst, const uint8_t *w, const int8_t *xqs, const half2 *xds, int rows, int nbr, int t0) {
	int row = blockIdx.x * TC_MV_WARPS + threadIdx.x / 32;
	int lane = threadIdx.x % 32;
	if (row >= rows) return; // whole warps exit: the reduction below needs all 32 lanes
	int t = t0 + blockIdx.y * NC;
	size_t nb = (size_t)rows * nbr;
	const uint8_t *wqs = w + (size_t)row * nbr * tc_qs_bytes(TYPE);
	const uint8_t *wsc = w + nb * tc_qs_bytes(TYPE) + (size_t)row * nbr * tc_scale_bytes(TYPE);
	float acc[NC];
#pragma unroll
	for (int c = 0; c < NC; c++) acc[c] = 0.f;
	// Unrolled so each lane keeps two weight blocks in flight.
#pragma unroll 2
	for (int b = lane; b < nbr; b += 32) {
		const tc_qblock k =
		    tc_qload<TYPE>(wqs + (size_t)b * tc_qs_bytes(TYPE), wsc + (size_t)b * tc_scale_bytes(TYPE));
#pragma unroll
		for (int c = 0; c < NC; c++) {
			size_t xb = (size_t)(t + c) * nbr + b;
			const int4 *xq = (const int4 *)(xqs + xb * 32);
			acc[c] = __fadd_rn(acc[c], tc_qdot<TYPE>(k, xq[0], xq[1], xds[xb]));
		}
	}
#pragma unroll
	for (int c = 0; c < NC; c++) {
		float v = tc_warp_sum(acc[c]);
		if (lane == 0) dst[(size_t)(t + c) * rows + row] = v;
	}
}

#endif
