// kquant.cuh: device code for K-quant weights (Q4_K, Q5_K, Q6_K), shared by
// matmul_k.cu (products), elementwise.cu (embedding) and the host emulation
// test (kernels/cuda/emu), which compiles it without CUDA.
//
// As in ggml, K-quant weights multiply activations quantized to Q8_K
// (256-value blocks, a float scale and int8 codes), which are made on the
// device exactly as quantize_row_q8_K_ref makes them. The products follow
// matmul.cu's plan: one warp per output row streams the row's blocks once per
// group of up to TC_MAX_COLS tokens. A 256-value block is too big for one
// lane, so eight lanes share it: each reads 16 contiguous bytes of its codes
// (the eight lanes of a block read 128 contiguous bytes, a warp four blocks
// side by side) and forms an exact integer partial sum; three shuffles add the
// eight partials, still in integers, and the block's float result is then
// computed once, in the order of operations of kernels/quant.VecDot. So every
// block contributes the reference's value bit for bit, only the float sum over
// blocks is ordered differently, and the order depends on the row length
// alone: results are batch-invariant.
#ifndef TANDEM_KQUANT_CUH
#define TANDEM_KQUANT_CUH

#include "common.cuh"

#define TC_QK 256

// tc_kweight_value dequantizes value j of a repacked K-quant block (qs, sc)
// as kernels/quant's decoders do, in their order of operations (the _rn
// intrinsics are never fused into FMAs).
static __device__ __forceinline__ float tc_kweight_value(const uint8_t *qs, const uint8_t *sc, int type, int j) {
	if (type == TC_Q6_K) {
		int hh = j / 128, g = j % 128 / 32, l = j % 32;
		int nib = qs[64 * hh + 32 * (g & 1) + l];
		nib = g < 2 ? nib & 0xF : nib >> 4;
		int q = (nib | ((qs[128 + 32 * hh + l] >> (2 * g)) & 3) << 4) - 32;
		float d = __half2float(*(const half *)(sc + 16));
		return __fmul_rn(__fmul_rn(d, (float)(int8_t)sc[8 * hh + l / 16 + 2 * g]), (float)q);
	}
	// Q4_K, Q5_K: sub-block k = j/32 of 32 values, nibbles of qs[32*(k/2)+l].
	int k = j / 32, l = j % 32;
	const uint8_t *s = sc + 4;
	int scale, min;
	if (k < 4) {
		scale = s[k] & 63, min = s[k + 4] & 63;
	} else {
		scale = (s[k + 4] & 0xF) | ((s[k - 4] >> 6) << 4);
		min = (s[k + 4] >> 4) | ((s[k] >> 6) << 4);
	}
	const uint8_t *codes = type == TC_Q5_K ? qs + 32 : qs;
	int q = codes[32 * (k / 2) + l];
	q = k % 2 == 0 ? q & 0xF : q >> 4;
	if (type == TC_Q5_K && (qs[l] >> k) & 1) q += 16;
	float2 dm = __half22float2(*(const half2 *)sc);
	return __fsub_rn(__fmul_rn(__fmul_rn(dm.x, (float)scale), (float)q), __fmul_rn(dm.y, (float)min));
}

// tc_quantize_q8_k is one warp quantizing 256-value block blk of x, eight
// consecutive values per lane. The scale maps the value of largest magnitude
// (the first one on ties, as the reference's sequential scan finds it) to
// -127; codes round half to even and saturate to [-128, 127]. Codes go to qs
// (256 bytes per block), the scale 1/iscale to d, and the sums of each run of
// 16 codes to bsums (16 per block), which the Q4_K/Q5_K min terms need for
// every weight row: computed once here rather than per row.
static __device__ __forceinline__ void tc_quantize_q8_k(int8_t *qs, float *d, int16_t *bsums, const float *x,
                                                        size_t blk, int lane) {
	const float4 *xp = (const float4 *)(x + blk * TC_QK + lane * 8);
	float4 a = xp[0], b = xp[1];
	float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
	// amax < |v| is false for NaN, so NaNs never become the maximum (as in
	// the reference); at = TC_QK marks "nothing above zero seen".
	float amax = 0.f, m = 0.f;
	int at = TC_QK;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		float ax = fabsf(v[i]);
		if (amax < ax) amax = ax, m = v[i], at = lane * 8 + i;
	}
	// (amax descending, index ascending) is a total order on the lanes'
	// candidates, so the butterfly leaves every lane with the same winner.
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float oa = __shfl_xor_sync(0xffffffffu, amax, o);
		float om = __shfl_xor_sync(0xffffffffu, m, o);
		int oi = __shfl_xor_sync(0xffffffffu, at, o);
		if (oa > amax || (oa == amax && oi < at)) amax = oa, m = om, at = oi;
	}
	// m == 0 (no value above zero) leaves a zero block, as in the reference.
	float iscale = m == 0.f ? 0.f : __fdiv_rn(-127.f, m);
	uint32_t packed[2] = {0, 0};
	int sum = 0;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		// __float2int_rn is round-half-even and maps NaN to 0, as ggml's
		// nearest_int does for the values it can meet.
		int q = m == 0.f ? 0 : __float2int_rn(__fmul_rn(iscale, v[i]));
		q = min(127, max(-128, q));
		sum += q;
		packed[i / 4] |= (uint32_t)(q & 0xFF) << (8 * (i % 4));
	}
	*(int2 *)(qs + blk * TC_QK + lane * 8) = make_int2((int)packed[0], (int)packed[1]);
	sum += __shfl_xor_sync(0xffffffffu, sum, 1); // lanes 2j and 2j+1 hold run j
	if (lane % 2 == 0) bsums[blk * 16 + lane / 2] = (int16_t)sum;
	if (lane == 0) d[blk] = m == 0.f ? 0.f : __fdiv_rn(1.f, iscale);
}

static __device__ __forceinline__ int tc_byte(uint32_t u, int j) { return (int)((u >> (8 * j)) & 0xFFu); }

// tc_klane is one lane's eighth of a weight block, loaded once and used for
// every token of the group. The lane covers two runs of 16 values, lo and hi,
// whose codes it holds as bytes for dp4a (Q4_K/Q5_K: unsigned, < 32, so
// also valid as signed; Q6_K: q - 32, signed) together with their scales
// and, for Q4_K/Q5_K, mins.
//
// Lane roles, sub = lane % 8:
//   Q4_K, Q5_K: chunk c = sub/2, half h = sub%2. The bytes qs[32c+16h, +16)
//     hold values 64c+16h.. (low nibbles, sub-block 2c) and 64c+32+16h..
//     (high nibbles, sub-block 2c+1); Q5_K's fifth bits are bits 2c and 2c+1
//     of qh[16h, +16).
//   Q6_K: half hh = sub/4, part p = sub%4. ql[64hh+16p, +16) holds values
//     128hh+16p.. (low nibbles, scale 8hh+p) and 128hh+64+16p.. (high
//     nibbles, scale 8hh+p+4); their top two bits are in qh[32hh+16(p%2),
//     +16) at bits 2(p/2) and 4+2(p/2).
struct tc_klane {
	int4 lo, hi;
	int sc_lo, sc_hi, m_lo, m_hi;
	int x_lo, x_hi; // offsets of the runs in the activation block
	float2 dm;      // d and dmin (Q6_K: d, 0)
};

// tc_kscale_min is ggml's get_scale_min_k4 for sub-block k over the 12
// packed scale bytes s0..s2 (little-endian words).
static __device__ __forceinline__ void tc_kscale_min(int k, uint32_t s0, uint32_t s1, uint32_t s2, int *sc,
                                                     int *m) {
	if (k < 4) {
		*sc = tc_byte(s0, k) & 63;
		*m = tc_byte(s1, k) & 63;
		return;
	}
	int j = k - 4;
	*sc = (tc_byte(s2, j) & 0xF) | ((tc_byte(s0, j) >> 6) << 4);
	*m = (tc_byte(s2, j) >> 4) | ((tc_byte(s1, j) >> 6) << 4);
}

static __device__ __forceinline__ int4 tc_and4(int4 v, int m) { return make_int4(v.x & m, v.y & m, v.z & m, v.w & m); }
static __device__ __forceinline__ int4 tc_shr4(int4 v, int s) {
	return make_int4(v.x >> s, v.y >> s, v.z >> s, v.w >> s);
}
static __device__ __forceinline__ int4 tc_or4(int4 a, int4 b) {
	return make_int4(a.x | b.x, a.y | b.y, a.z | b.z, a.w | b.w);
}
// tc_sub4 subtracts b from every byte of v (no borrow between bytes: the
// results are the signed codes, in range).
static __device__ __forceinline__ int4 tc_sub4(int4 v, int b) {
	return make_int4(__vsub4(v.x, b), __vsub4(v.y, b), __vsub4(v.z, b), __vsub4(v.w, b));
}
// tc_bits4 takes the n (1 or 2) bits at bit s of every byte of v and puts
// them at bit `to` of that byte.
static __device__ __forceinline__ int4 tc_bits4(int4 v, int s, int n, int to) {
	int mask = n == 1 ? 0x01010101 : 0x03030303;
	int4 r = tc_and4(tc_shr4(v, s), mask);
	return make_int4(r.x << to, r.y << to, r.z << to, r.w << to);
}

template <int TYPE>
static __device__ __forceinline__ void tc_kload(tc_klane &k, const uint8_t *bq, const uint8_t *bs, int sub) {
	const int nib = 0x0F0F0F0F;
	if (TYPE == TC_Q6_K) {
		int hh = sub / 4, p = sub % 4;
		int4 ql = *(const int4 *)(bq + 16 * sub);
		int4 qh = *(const int4 *)(bq + 128 + 16 * (2 * hh + p % 2));
		int s = 2 * (p / 2);
		// Codes q - 32 in [-32, 31]: signed bytes, taken off once here
		// rather than per token.
		k.lo = tc_sub4(tc_or4(tc_and4(ql, nib), tc_bits4(qh, s, 2, 4)), 0x20202020);
		k.hi = tc_sub4(tc_or4(tc_and4(tc_shr4(ql, 4), nib), tc_bits4(qh, s + 4, 2, 4)), 0x20202020);
		k.sc_lo = (int)(int8_t)bs[8 * hh + p];
		k.sc_hi = (int)(int8_t)bs[8 * hh + p + 4];
		k.m_lo = k.m_hi = 0;
		k.x_lo = 128 * hh + 16 * p;
		k.x_hi = k.x_lo + 64;
		k.dm = make_float2(__half2float(*(const half *)(bs + 16)), 0.f);
		return;
	}
	int c = sub / 2, h = sub % 2;
	const uint4 hdr = *(const uint4 *)bs;
	k.dm = __half22float2(*(const half2 *)&hdr.x);
	tc_kscale_min(2 * c, hdr.y, hdr.z, hdr.w, &k.sc_lo, &k.m_lo);
	tc_kscale_min(2 * c + 1, hdr.y, hdr.z, hdr.w, &k.sc_hi, &k.m_hi);
	k.x_lo = 64 * c + 16 * h;
	k.x_hi = k.x_lo + 32;
	if (TYPE == TC_Q4_K) {
		int4 q = *(const int4 *)(bq + 16 * sub);
		k.lo = tc_and4(q, nib);
		k.hi = tc_and4(tc_shr4(q, 4), nib);
		return;
	}
	int4 q = *(const int4 *)(bq + 32 + 16 * sub);
	int4 qh = *(const int4 *)(bq + 16 * h);
	k.lo = tc_or4(tc_and4(q, nib), tc_bits4(qh, 2 * c, 1, 4));
	k.hi = tc_or4(tc_and4(tc_shr4(q, 4), nib), tc_bits4(qh, 2 * c + 1, 1, 4));
}

static __device__ __forceinline__ int tc_dot16(int4 w, int4 a, int acc) {
	acc = __dp4a(w.x, a.x, acc);
	acc = __dp4a(w.y, a.y, acc);
	acc = __dp4a(w.z, a.z, acc);
	return __dp4a(w.w, a.w, acc);
}

// tc_kpart is the lane's exact share of the block's integer sums against
// the activation codes xq (the block's 256 codes): x = Σ sc*q*a, and for
// Q4_K/Q5_K y = Σ m*a (the min term, ggml's Σ min_k*bsum_k; 0 for Q6_K).
template <int TYPE>
static __device__ __forceinline__ int2 tc_kpart(const tc_klane &k, const int8_t *xq, const int16_t *xbs) {
	const int4 a_lo = *(const int4 *)(xq + k.x_lo), a_hi = *(const int4 *)(xq + k.x_hi);
	int s_lo = tc_dot16(k.lo, a_lo, 0), s_hi = tc_dot16(k.hi, a_hi, 0);
	if (TYPE == TC_Q6_K) return make_int2(k.sc_lo * s_lo + k.sc_hi * s_hi, 0);
	return make_int2(k.sc_lo * s_lo + k.sc_hi * s_hi, k.m_lo * xbs[k.x_lo / 16] + k.m_hi * xbs[k.x_hi / 16]);
}

// tc_kblock is the block's float contribution from its whole integer sums,
// in kernels/quant's order of operations (dotKMin, dotQ6_K). The _rn
// intrinsics are never fused into FMAs.
template <int TYPE>
static __device__ __forceinline__ float tc_kblock(float2 dm, int2 s, float da) {
	if (TYPE == TC_Q6_K) return __fmul_rn(__fmul_rn(dm.x, da), (float)s.x);
	float d = __fmul_rn(dm.x, da), dmin = __fmul_rn(dm.y, da);
	return __fsub_rn(__fmul_rn(d, (float)s.x), __fmul_rn(dmin, (float)s.y));
}

// tc_q8k is a batch of Q8_K activation rows as tc_quantize_q8_k writes
// them, indexed by block (token * blocks per row + block).
struct tc_q8k {
	const int8_t *qs;     // 256 codes a block
	const float *d;       // one scale a block
	const int16_t *bsums; // 16 run sums a block
};

// k_mmvq_k: dst[t, row] for NC tokens starting at t0 + blockIdx.y*NC; one
// warp per weight row, four blocks per step, eight lanes per block.
template <int TYPE, int NC>
__global__ void __launch_bounds__(TC_MV_WARPS * 32)
    k_mmvq_k(float *dst, const uint8_t *w, tc_q8k x, int rows, int nbr, int t0) {
	int row = blockIdx.x * TC_MV_WARPS + threadIdx.x / 32;
	int lane = threadIdx.x % 32, sub = lane % 8;
	if (row >= rows) return; // whole warps exit: the shuffles below need all 32 lanes
	int t = t0 + blockIdx.y * NC;
	const size_t qsb = tc_qs_bytes(TYPE), scb = tc_scale_bytes(TYPE);
	size_t nb = (size_t)rows * nbr;
	const uint8_t *wqs = w + (size_t)row * nbr * qsb;
	const uint8_t *wsc = w + nb * qsb + (size_t)row * nbr * scb;
	float acc[NC];
#pragma unroll
	for (int c = 0; c < NC; c++) acc[c] = 0.f;
#pragma unroll 2
	for (int b0 = 0; b0 < nbr; b0 += 4) {
		int b = b0 + lane / 8;
		bool ok = b < nbr; // the same for the eight lanes of a block
		tc_klane k = {};
		if (ok) tc_kload<TYPE>(k, wqs + (size_t)b * qsb, wsc + (size_t)b * scb, sub);
#pragma unroll
		for (int c = 0; c < NC; c++) {
			size_t xb = (size_t)(t + c) * nbr + b;
			int2 s = ok ? tc_kpart<TYPE>(k, x.qs + xb * TC_QK, x.bsums + xb * 16) : make_int2(0, 0);
#pragma unroll
			for (int o = 4; o > 0; o >>= 1) {
				s.x += __shfl_xor_sync(0xffffffffu, s.x, o);
				if (TYPE != TC_Q6_K) s.y += __shfl_xor_sync(0xffffffffu, s.y, o);
			}
			if (ok && sub == 0) acc[c] = __fadd_rn(acc[c], tc_kblock<TYPE>(k.dm, s, x.d[xb]));
		}
	}
#pragma unroll
	for (int c = 0; c < NC; c++) {
		float v = tc_warp_sum(acc[c]);
		if (lane == 0) dst[(size_t)(t + c) * rows + row] = v;
	}
}

#endif
