// SIMD kernels shared by the AVX2 and AVX-512 levels. The including file sets
// the target (pragma GCC target), SFX (name suffix), TK_VNNI (1: use
// _mm256_dpbusd_epi32, 0: maddubs+madd), TK_W512 (1: the full-precision
// kernels of tk_simd512.h) and TK_MR/TK_NR (tile shape).
//
// Every (weight row, activation row) pair owns one 8-lane accumulator (16
// lanes in tk_simd512.h) and sees the same instructions whatever the tile
// shape: the tile only decides how many pairs share a weight or activation
// load. Integer block sums are exact,
// so the only rounding is the per-block float FMA and the final fixed-order
// horizontal sum.

// Weights stream from DRAM once per token; the hardware prefetcher (weak
// in the VMs Tandem runs on) recovers after every matrix and page, so the
// kernels prefetch each weight row this far ahead: 2x on batch-1 decode.
#ifndef TK_PF_DIST
#define TK_PF_DIST 4096
#endif

static inline float SFX(hsum)(__m256 v) {
	__m128 lo = _mm256_castps256_ps128(v);
	__m128 hi = _mm256_extractf128_ps(v, 1);
	lo = _mm_add_ps(lo, hi);
	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
	return _mm_cvtss_f32(lo);
}

static inline float SFX(h2f)(const uint8_t *p) {
	uint16_t h;
	memcpy(&h, p, 2);
	return _cvtsh_ss(h);
}

// dpb returns the 8 int32 lane sums of u8(u) * s8(s) over groups of four bytes.
static inline __m256i SFX(dpb)(__m256i u, __m256i s) {
#if TK_VNNI
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
	__m256i p16 = _mm256_maddubs_epi16(u, s);  // no saturation: |u*s*2| <= 32512
	return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
#endif
}

// bits32 expands the 32 bits at p to 32 bytes of 0xff (bit set) or 0.
static inline __m256i SFX(bits32)(const uint8_t *p) {
	uint32_t x;
	memcpy(&x, p, 4);
	const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
	                                       0x0101010101010101, 0x0000000000000000);
	__m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
	bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
	return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

// nibbles unpacks 16 bytes into 32 values: low nibbles first, then high.
static inline __m256i SFX(nibbles)(const uint8_t *p) {
	__m128i q = _mm_loadu_si128((const __m128i *)p);
	__m128i m = _mm_set1_epi8(0x0f);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

#if !TK_W512  // tk_simd512.h has the 512-bit legacy_body
// legacy_body is the tile kernel of the 32-value quants. T, MR and NR are
// compile-time constants at every call, so the accumulators stay in registers.
static inline __attribute__((always_inline)) void SFX(legacy_body)(
    const int T, int nb, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m256 acc[TK_MR][TK_NR];
	// summ[i] lane j accumulates weight row i's offset term against
	// activation row j with one FMA per block; a lane's value is the same
	// whatever NR is (IEEE FMA is exactly rounded per lane).
	__m128 summ[TK_MR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
		summ[i] = _mm_setzero_ps();
	}
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : T == TK_Q5_0 ? 22 : T == TK_Q5_1 ? 24 : 34;
	const __m256i bit4 = _mm256_set1_epi8(0x10);
	for (int b = 0; b < nb; b++) {
		__m256i wq[TK_MR];
		__m256 dw[TK_MR];
		float mw[TK_MR];
		for (int i = 0; i < MR; i++) {
			const uint8_t *p = w + (size_t)i * ws + (size_t)b * bb;
			_mm_prefetch((const char *)p + TK_PF_DIST, _MM_HINT_T0);
			float d = SFX(h2f)(p);
			dw[i] = _mm256_set1_ps(d);
			switch (T) {
			case TK_Q4_0:
				wq[i] = SFX(nibbles)(p + 2);
				mw[i] = -8.0f * d;
				break;
			case TK_Q4_1:
				wq[i] = SFX(nibbles)(p + 4);
				mw[i] = SFX(h2f)(p + 2);
				break;
			case TK_Q5_0:
				wq[i] = _mm256_or_si256(SFX(nibbles)(p + 6), _mm256_and_si256(SFX(bits32)(p + 2), bit4));
				mw[i] = -16.0f * d;
				break;
			case TK_Q5_1:
				wq[i] = _mm256_or_si256(SFX(nibbles)(p + 8), _mm256_and_si256(SFX(bits32)(p + 4), bit4));
				mw[i] = SFX(h2f)(p + 2);
				break;
			default:  // Q8_0
				wq[i] = _mm256_loadu_si256((const __m256i *)(p + 2));
				mw[i] = 0;
			}
		}
		if (T != TK_Q8_0) {
			// Built in registers: four scalar stores read back as one vector
			// would stall on store forwarding every block.
#define SA(j) ((j) < NR ? ((const tk_q8a *)(a + (size_t)(j) * as) + b)->s : 0.0f)
			__m128 sv = _mm_set_ps(SA(3), SA(2), SA(1), SA(0));
#undef SA
			for (int i = 0; i < MR; i++) summ[i] = _mm_fmadd_ps(_mm_set1_ps(mw[i]), sv, summ[i]);
		}
		for (int j = 0; j < NR; j++) {
			const tk_q8a *ab = (const tk_q8a *)(a + (size_t)j * as) + b;
			__m256i aq = _mm256_loadu_si256((const __m256i *)ab->qs);
			__m256 da = _mm256_set1_ps(ab->d);
			for (int i = 0; i < MR; i++) {
				__m256i l;
				if (T == TK_Q8_0) {  // signed x signed: move the sign onto a
					l = SFX(dpb)(_mm256_abs_epi8(wq[i]), _mm256_sign_epi8(aq, wq[i]));
				} else {
					l = SFX(dpb)(wq[i], aq);
				}
				acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(l), _mm256_mul_ps(dw[i], da), acc[i][j]);
			}
		}
	}
	for (int i = 0; i < MR; i++) {
		float sm[4];
		_mm_storeu_ps(sm, summ[i]);
		for (int j = 0; j < NR; j++) out[(size_t)j * ldo + i] = SFX(hsum)(acc[i][j]) + sm[j];
	}
}

#endif

// TK_F32_HOT is a pseudo weight type for float_body: f32 rows that are
// already in cache, so the kernel skips the prefetches.
enum { TK_F32_HOT = 64 };

// load8 converts 8 weights of a float type at element k of row p to f32.
static inline __m256 SFX(load8)(const int T, const uint8_t *p, int k) {
	switch (T) {
	case TK_F16:
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * k)));
	case TK_BF16:
		return _mm256_castsi256_ps(_mm256_slli_epi32(
		    _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 2 * k))), 16));
	default:
		return _mm256_loadu_ps((const float *)(p + 4 * k));
	}
}

static inline float SFX(load1)(const int T, const uint8_t *p, int k) {
	float f;
	uint32_t b;
	switch (T) {
	case TK_F16:
		return SFX(h2f)(p + 2 * k);
	case TK_BF16:
		b = (uint32_t)(p[2 * k] | p[2 * k + 1] << 8) << 16;
		memcpy(&f, &b, 4);
		return f;
	default:
		memcpy(&f, p + 4 * k, 4);
		return f;
	}
}

#if TK_W512
#include "tk_simd512.h"
#else
// float_body dots float weights with f32 activation rows; n is the column
// count: 8-lane FMAs, then the tail in order.
static inline __attribute__((always_inline)) void SFX(float_body)(
    const int T, int n, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m256 acc[TK_MR][TK_NR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
	}
	int k = 0;
	for (; k + 8 <= n; k += 8) {
		__m256 wv[TK_MR];
		for (int i = 0; i < MR; i++) {
			if (T != TK_F32_HOT && (k & 15) == 0) {
				_mm_prefetch((const char *)(w + (size_t)i * ws) + (T == TK_F32 ? 4 : 2) * k + TK_PF_DIST, _MM_HINT_T0);
			}
			wv[i] = SFX(load8)(T, w + (size_t)i * ws, k);
		}
		for (int j = 0; j < NR; j++) {
			__m256 xv = _mm256_loadu_ps((const float *)(a + (size_t)j * as) + k);
			for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
	for (int j = 0; j < NR; j++) {
		const float *x = (const float *)(a + (size_t)j * as);
		for (int i = 0; i < MR; i++) {
			float s = SFX(hsum)(acc[i][j]);
			for (int kk = k; kk < n; kk++) s += SFX(load1)(T, w + (size_t)i * ws, kk) * x[kk];
			out[(size_t)j * ldo + i] = s;
		}
	}
}

// deq8 is values 8g..8g+7 of a legacy block at p, dequantized with
// tk_dequant_row's arithmetic: (float)(q - bias) * d + m, or (float)q * d for
// Q8_0 (m is zero for Q4_0, and adding +0 keeps the same bits as there).
static inline __m256 SFX(deq8)(const int T, const uint8_t *p, int g, __m256 d, __m256 m) {
	if (T == TK_Q8_0) {
		__m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * g)));
		return _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
	}
	const uint8_t *qs = p + (T == TK_Q4_0 ? 2 : 4);
	__m128i b = _mm_loadl_epi64((const __m128i *)(qs + 8 * (g & 1)));
	if (g >= 2) {
		b = _mm_srli_epi16(b, 4);
	}
	__m256i q = _mm256_cvtepu8_epi32(_mm_and_si128(b, _mm_set1_epi8(0x0f)));
	if (T == TK_Q4_0) {
		q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
	}
	return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), d), m);
}

// deq_body is float_body(TK_F32) over weights dequantized on the fly: the
// same 8-wide FMA chain per pair in the same column order, hence the same
// bits as dequantizing first.
static inline __attribute__((always_inline)) void SFX(deq_body)(
    const int T, int nb, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m256 acc[TK_MR][TK_NR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();
	}
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : 34;
	for (int b = 0; b < nb; b++) {
		const uint8_t *p[TK_MR];
		__m256 d[TK_MR], m[TK_MR];
		for (int i = 0; i < MR; i++) {
			p[i] = w + (size_t)i * ws + (size_t)b * bb;
			_mm_prefetch((const char *)p[i] + TK_PF_DIST, _MM_HINT_T0);
			d[i] = _mm256_set1_ps(SFX(h2f)(p[i]));
			m[i] = T == TK_Q4_1 ? _mm256_set1_ps(SFX(h2f)(p[i] + 2)) : _mm256_setzero_ps();
		}
#if TK_VNNI
		if (T != TK_Q8_0) {
			// 4-bit weights take 16 values: build each row's table of the 16
			// dequantized values once per block (the same multiply and add per
			// value) and look values up with one two-table permute.
			__m256 lo[TK_MR], hi[TK_MR];
			__m256i qb[TK_MR];
			const __m256 q0 = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
			const __m256 q8v = _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15);
			const __m256 bias = _mm256_set1_ps(T == TK_Q4_0 ? 8.0f : 0.0f);
			for (int i = 0; i < MR; i++) {
				lo[i] = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(q0, bias), d[i]), m[i]);
				hi[i] = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(q8v, bias), d[i]), m[i]);
				qb[i] = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p[i] + (T == TK_Q4_0 ? 2 : 4))));
			}
			for (int g = 0; g < 4; g++) {
				__m256 wv[TK_MR];
				for (int i = 0; i < MR; i++) {
					__m256i idx;
					if (g == 1 || g == 3) {
						idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p[i] + (T == TK_Q4_0 ? 10 : 12))));
					} else {
						idx = qb[i];
					}
					if (g >= 2) {
						idx = _mm256_srli_epi32(idx, 4);
					}
					// The permute reads only the low four bits of each index.
					wv[i] = _mm256_permutex2var_ps(lo[i], idx, hi[i]);
				}
				for (int j = 0; j < NR; j++) {
					__m256 xv = _mm256_loadu_ps((const float *)(a + (size_t)j * as) + 32 * b + 8 * g);
					for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
				}
			}
			continue;
		}
#endif
		for (int g = 0; g < 4; g++) {
			__m256 wv[TK_MR];
			for (int i = 0; i < MR; i++) wv[i] = SFX(deq8)(T, p[i], g, d[i], m[i]);
			for (int j = 0; j < NR; j++) {
				__m256 xv = _mm256_loadu_ps((const float *)(a + (size_t)j * as) + 32 * b + 8 * g);
				for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
			}
		}
	}
	for (int j = 0; j < NR; j++) {
		for (int i = 0; i < MR; i++) out[(size_t)j * ldo + i] = SFX(hsum)(acc[i][j]);
	}
}

#endif

// DISPATCH instantiates BODY for every tile shape up to TK_MR x TK_NR.
#define TILE_FN(NAME, BODY, T)                                                              \
	static void SFX(NAME)(int nb, const uint8_t *w, size_t ws, int mr, const uint8_t *a,  \
	                      size_t as, int nr, float *out, size_t ldo) {                  \
		switch (mr * 8 + nr) {                                                      \
		case 1 * 8 + 1: SFX(BODY)(T, nb, w, ws, 1, a, as, 1, out, ldo); return;     \
		case 1 * 8 + 2: SFX(BODY)(T, nb, w, ws, 1, a, as, 2, out, ldo); return;     \
		case 2 * 8 + 1: SFX(BODY)(T, nb, w, ws, 2, a, as, 1, out, ldo); return;     \
		case 2 * 8 + 2: SFX(BODY)(T, nb, w, ws, 2, a, as, 2, out, ldo); return;     \
		case 3 * 8 + 1: SFX(BODY)(T, nb, w, ws, 3, a, as, 1, out, ldo); return;     \
		case 3 * 8 + 2: SFX(BODY)(T, nb, w, ws, 3, a, as, 2, out, ldo); return;     \
		case 4 * 8 + 1: SFX(BODY)(T, nb, w, ws, 4, a, as, 1, out, ldo); return;     \
		case 4 * 8 + 2: SFX(BODY)(T, nb, w, ws, 4, a, as, 2, out, ldo); return;     \
		}                                                                           \
		TILE_WIDE(BODY, T)                                                          \
	}

#if TK_NR > 2
#define TILE_WIDE(BODY, T)                                                    \
	switch (mr * 8 + nr) {                                                \
	case 1 * 8 + 3: SFX(BODY)(T, nb, w, ws, 1, a, as, 3, out, ldo); return; \
	case 1 * 8 + 4: SFX(BODY)(T, nb, w, ws, 1, a, as, 4, out, ldo); return; \
	case 2 * 8 + 3: SFX(BODY)(T, nb, w, ws, 2, a, as, 3, out, ldo); return; \
	case 2 * 8 + 4: SFX(BODY)(T, nb, w, ws, 2, a, as, 4, out, ldo); return; \
	case 3 * 8 + 3: SFX(BODY)(T, nb, w, ws, 3, a, as, 3, out, ldo); return; \
	case 3 * 8 + 4: SFX(BODY)(T, nb, w, ws, 3, a, as, 4, out, ldo); return; \
	case 4 * 8 + 3: SFX(BODY)(T, nb, w, ws, 4, a, as, 3, out, ldo); return; \
	case 4 * 8 + 4: SFX(BODY)(T, nb, w, ws, 4, a, as, 4, out, ldo); return; \
	}
#else
#define TILE_WIDE(BODY, T)
#endif

TILE_FN(tile_q4_0, legacy_body, TK_Q4_0)
TILE_FN(tile_q4_1, legacy_body, TK_Q4_1)
TILE_FN(tile_q5_0, legacy_body, TK_Q5_0)
TILE_FN(tile_q5_1, legacy_body, TK_Q5_1)
TILE_FN(tile_q8_0, legacy_body, TK_Q8_0)
TILE_FN(tile_f32, float_body, TK_F32)
TILE_FN(tile_f32_hot, float_body, TK_F32_HOT)
TILE_FN(tile_f16, float_body, TK_F16)
TILE_FN(tile_bf16, float_body, TK_BF16)
TILE_FN(deq_tile_q4_0, deq_body, TK_Q4_0)
TILE_FN(deq_tile_q4_1, deq_body, TK_Q4_1)
TILE_FN(deq_tile_q8_0, deq_body, TK_Q8_0)

static void SFX(cvt_f16)(float *dst, const uint16_t *src, int n) {
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		_mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
	}
	for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}

static void SFX(cvt_i8)(float *dst, const int8_t *src, float scale, int n) {
	__m256 sv = _mm256_set1_ps(scale);
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(src + i))));
		_mm256_storeu_ps(dst + i, _mm256_mul_ps(v, sv));
	}
	for (; i < n; i++) dst[i] = (float)src[i] * scale;
}

static void SFX(scores)(float *s, const float *q, const float *K, int n, int hd, float scale) {
	for (int j = 0; j < n; j++) {
		const float *k = K + (size_t)j * hd;
		__m256 acc = _mm256_setzero_ps();
		int i = 0;
		for (; i + 8 <= hd; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), acc);
		float d = SFX(hsum)(acc);
		for (; i < hd; i++) d += q[i] * k[i];
		s[j] = d * scale;
	}
}

// exp8 is Cephes' expf on 8 lanes (about 1 ulp on the softmax's x <= 0);
// inputs below -87.3 give 0.
static inline __m256 SFX(exp8)(__m256 x) {
	const __m256 lo = _mm256_set1_ps(-87.3f);
	__m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
	x = _mm256_max_ps(x, lo);
	x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
	__m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.9875691500E-4f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
	return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

static float SFX(exp_sum)(float *s, int n, float m) {
	__m256 mv = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
	int j = 0;
	for (; j + 8 <= n; j += 8) {
		__m256 e = SFX(exp8)(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
		_mm256_storeu_ps(s + j, e);
		acc = _mm256_add_ps(acc, e);
	}
	float sum = SFX(hsum)(acc);
	if (j < n) {  // the tail through the same exp8, one masked vector
		float tmp[8] = {0};
		for (int k = j; k < n; k++) tmp[k - j] = s[k] - m;
		_mm256_storeu_ps(tmp, SFX(exp8)(_mm256_loadu_ps(tmp)));
		for (int k = j; k < n; k++) {
			s[k] = tmp[k - j];
			sum += s[k];
		}
	}
	return sum;
}

static void SFX(wsum)(float *acc, const float *p, const float *V, int n, int hd) {
	int i = 0;
	for (; i + 32 <= hd; i += 32) {  // four vectors of accumulators in registers
		__m256 a0 = _mm256_loadu_ps(acc + i), a1 = _mm256_loadu_ps(acc + i + 8);
		__m256 a2 = _mm256_loadu_ps(acc + i + 16), a3 = _mm256_loadu_ps(acc + i + 24);
		for (int j = 0; j < n; j++) {
			const float *v = V + (size_t)j * hd + i;
			__m256 pj = _mm256_set1_ps(p[j]);
			a0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), a0);
			a1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), a1);
			a2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), a2);
			a3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), a3);
		}
		_mm256_storeu_ps(acc + i, a0);
		_mm256_storeu_ps(acc + i + 8, a1);
		_mm256_storeu_ps(acc + i + 16, a2);
		_mm256_storeu_ps(acc + i + 24, a3);
	}
	for (; i + 8 <= hd; i += 8) {
		__m256 a = _mm256_loadu_ps(acc + i);
		for (int j = 0; j < n; j++) a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(V + (size_t)j * hd + i), a);
		_mm256_storeu_ps(acc + i, a);
	}
	for (; i < hd; i++) {
		float a = acc[i];
		for (int j = 0; j < n; j++) a = fmaf(p[j], V[(size_t)j * hd + i], a);
		acc[i] = a;
	}
}

static void SFX(scale)(float *acc, float alpha, int n) {
	__m256 av = _mm256_set1_ps(alpha);
	int i = 0;
	for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_mul_ps(_mm256_loadu_ps(acc + i), av));
	for (; i < n; i++) acc[i] *= alpha;
}

static void SFX(silu_mul)(float *dst, const float *g, const float *u, int n) {
	const __m256 one = _mm256_set1_ps(1.0f);
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 gv = _mm256_loadu_ps(g + i);
		__m256 e = SFX(exp8)(_mm256_sub_ps(_mm256_setzero_ps(), gv));
		__m256 sg = _mm256_div_ps(gv, _mm256_add_ps(one, e));
		_mm256_storeu_ps(dst + i, _mm256_mul_ps(sg, _mm256_loadu_ps(u + i)));
	}
	for (; i < n; i++) dst[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

#include "tk_kquant.h"

static void SFX(fill)(tk_kernels *k) {
	SFX(fill_kquant)(k);
	k->mr = TK_MR;
	k->nr = TK_NR;
	k->tile[TK_Q4_0] = SFX(tile_q4_0);
	k->tile[TK_Q4_1] = SFX(tile_q4_1);
	k->tile[TK_Q5_0] = SFX(tile_q5_0);
	k->tile[TK_Q5_1] = SFX(tile_q5_1);
	k->tile[TK_Q8_0] = SFX(tile_q8_0);
	k->tile[TK_F32] = SFX(tile_f32);
	k->tile_hot = SFX(tile_f32_hot);
	k->tile[TK_F16] = SFX(tile_f16);
	k->tile[TK_BF16] = SFX(tile_bf16);
	k->deq_tile[TK_Q4_0] = SFX(deq_tile_q4_0);
	k->deq_tile[TK_Q4_1] = SFX(deq_tile_q4_1);
	k->deq_tile[TK_Q8_0] = SFX(deq_tile_q8_0);
#if TK_W512
	k->deq_row[TK_Q4_0] = SFX(deq_row_q4_0);
	k->deq_row[TK_Q4_1] = SFX(deq_row_q4_1);
	k->deq_row[TK_Q8_0] = SFX(deq_row_q8_0);
#endif
	k->cvt_f16 = SFX(cvt_f16);
	k->cvt_i8 = SFX(cvt_i8);
	k->scores = SFX(scores);
	k->exp_sum = SFX(exp_sum);
	k->wsum = SFX(wsum);
	k->silu_mul = SFX(silu_mul);
	k->scale = SFX(scale);
}
