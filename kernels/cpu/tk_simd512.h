// 512-bit full-precision kernels of the AVX-512 level, included by
// tk_simd.h in place of its 256-bit float_body and deq_body when TK_W512 is
// set. Zen 5 and Intel server cores execute 512-bit FMAs at the same rate
// as 256-bit ones, so 16-lane accumulators double the f32 tile throughput.
//
// Contract shared by float_body, deq_body and deq_row: every (weight row,
// activation row) pair owns one 16-lane accumulator; lane l sums the
// products of columns k = l (mod 16) in increasing k; hsum16 folds the lanes
// in one fixed order. deq_body dequantizes in registers with exactly
// tk_dequant_row's arithmetic and deq_row writes those same values to
// memory, so the small-batch path (deq_tile) and the large-batch path
// (deq_row then tile[TK_F32]) give identical bits and a row's result does not
// depend on the batch size that picked the path.

// hsum16 adds the upper eight lanes onto the lower eight, then sums those
// with hsum's fixed tree.
static inline float SFX(hsum16)(__m512 v) {
	__m256 lo = _mm512_castps512_ps256(v);
	__m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
	return SFX(hsum)(_mm256_add_ps(lo, hi));
}

// hsum4x4 is hsum16 of the 16 accumulators of a 4x4 tile at once: each
// level adds the same lane pairs as hsum16 (upper eight onto lower eight,
// then four, two, one), so every pair gets identical bits, with 45
// shuffles and adds instead of 16 separate trees. Lane 4j+i of the result
// is pair (i, j), so act row j's four results are one 128-bit unit.
static inline __m512 SFX(hsum4x4)(__m512 v[TK_MR][TK_NR]) {
	__m512 a[8], b[4], c[2];
	for (int m = 0; m < 8; m++) {
		__m512 x = v[(2 * m) / 4][(2 * m) % 4], y = v[(2 * m + 1) / 4][(2 * m + 1) % 4];
		a[m] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
	}
	for (int m = 0; m < 4; m++) {
		b[m] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0x88),
		                     _mm512_shuffle_f32x4(a[2 * m], a[2 * m + 1], 0xDD));
	}
	for (int m = 0; m < 2; m++) {
		c[m] = _mm512_add_ps(_mm512_shuffle_ps(b[2 * m], b[2 * m + 1], 0x44), _mm512_shuffle_ps(b[2 * m], b[2 * m + 1], 0xEE));
	}
	return _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xDD));
}

// store_tile writes pair (i, j)'s sum to out[j*ldo + i], through hsum4x4 for
// whole 4x4 tiles.
static inline __attribute__((always_inline)) void SFX(store_tile)(__m512 acc[TK_MR][TK_NR], const int MR, const int NR,
                                                                  float *out, size_t ldo) {
#if TK_MR == 4 && TK_NR == 4
	if (MR == 4 && NR == 4) {
		__m512 r = SFX(hsum4x4)(acc);
		_mm_storeu_ps(out, _mm512_castps512_ps128(r));
		_mm_storeu_ps(out + ldo, _mm512_extractf32x4_ps(r, 1));
		_mm_storeu_ps(out + 2 * ldo, _mm512_extractf32x4_ps(r, 2));
		_mm_storeu_ps(out + 3 * ldo, _mm512_extractf32x4_ps(r, 3));
		return;
	}
#endif
	for (int j = 0; j < NR; j++) {
		for (int i = 0; i < MR; i++) out[(size_t)j * ldo + i] = SFX(hsum16)(acc[i][j]);
	}
}

// load16 converts 16 weights of a float type at element k of row p to f32.
static inline __m512 SFX(load16)(const int T, const uint8_t *p, int k) {
	switch (T) {
	case TK_F16:
		return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 2 * k)));
	case TK_BF16:
		return _mm512_castsi512_ps(_mm512_slli_epi32(
		    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p + 2 * k))), 16));
	default:
		return _mm512_loadu_ps((const float *)(p + 4 * k));
	}
}

// float_body dots float weights with f32 activation rows; n is the column
// count: 16-lane FMAs, then the tail in order.
static inline __attribute__((always_inline)) void SFX(float_body)(
    const int T, int n, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m512 acc[TK_MR][TK_NR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
	}
	int k = 0;
	for (; k + 16 <= n; k += 16) {
		__m512 wv[TK_MR];
		for (int i = 0; i < MR; i++) {
			if (T == TK_F32 || (T != TK_F32_HOT && (k & 31) == 0)) {  // one prefetch per cache line
				_mm_prefetch((const char *)(w + (size_t)i * ws) + (T == TK_F32 ? 4 : 2) * k + TK_PF_DIST, _MM_HINT_T0);
			}
			wv[i] = SFX(load16)(T, w + (size_t)i * ws, k);
		}
		for (int j = 0; j < NR; j++) {
			__m512 xv = _mm512_loadu_ps((const float *)(a + (size_t)j * as) + k);
			for (int i = 0; i < MR; i++) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
		}
	}
	SFX(store_tile)(acc, MR, NR, out, ldo);
	if (k < n) {  // the tail columns, in order, onto each pair's sum
		for (int j = 0; j < NR; j++) {
			const float *x = (const float *)(a + (size_t)j * as);
			for (int i = 0; i < MR; i++) {
				float s = out[(size_t)j * ldo + i];
				for (int kk = k; kk < n; kk++) s += SFX(load1)(T, w + (size_t)i * ws, kk) * x[kk];
				out[(size_t)j * ldo + i] = s;
			}
		}
	}
}

// lut16 is the 16 values a 4-bit block decodes to, (q - bias) * d + m for
// q = 0..15, with tk_dequant_row's separate multiply and add. Q4_0 adds
// m = +0 exactly as tk_dequant_row does.
static inline __m512 SFX(lut16)(const int T, const uint8_t *p) {
	const __m512 q = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	__m512 d = _mm512_set1_ps(SFX(h2f)(p));
	__m512 m = T == TK_Q4_1 ? _mm512_set1_ps(SFX(h2f)(p + 2)) : _mm512_setzero_ps();
	__m512 bias = _mm512_set1_ps(T == TK_Q4_0 ? 8.0f : 0.0f);
	return _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(q, bias), d), m);
}

// deq16 is values 16g..16g+15 of the legacy block at p. idx holds the
// block's 16 quant bytes widened to 32 bits; the permute reads only the low
// four bits of each lane, so the high nibbles need a shift and no mask.
static inline __m512 SFX(deq16)(const int T, const uint8_t *p, int g, __m512 lut, __m512i idx) {
	if (T == TK_Q8_0) {
		__m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2 + 16 * g)));
		return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(SFX(h2f)(p)));
	}
	return _mm512_permutexvar_ps(g ? _mm512_srli_epi32(idx, 4) : idx, lut);
}

static inline __m512i SFX(qidx)(const int T, const uint8_t *p) {
	if (T == TK_Q8_0) {
		return _mm512_setzero_si512();
	}
	return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + (T == TK_Q4_0 ? 2 : 4))));
}

// deq_body is float_body(TK_F32) over weights dequantized on the fly.
static inline __attribute__((always_inline)) void SFX(deq_body)(
    const int T, int nb, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m512 acc[TK_MR][TK_NR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
	}
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : 34;
	for (int b = 0; b < nb; b++) {
		const uint8_t *p[TK_MR];
		__m512 lut[TK_MR];
		__m512i idx[TK_MR];
		for (int i = 0; i < MR; i++) {
			p[i] = w + (size_t)i * ws + (size_t)b * bb;
			_mm_prefetch((const char *)p[i] + TK_PF_DIST, _MM_HINT_T0);
			lut[i] = T == TK_Q8_0 ? _mm512_setzero_ps() : SFX(lut16)(T, p[i]);
			idx[i] = SFX(qidx)(T, p[i]);
		}
		for (int g = 0; g < 2; g++) {
			__m512 wv[TK_MR];
			for (int i = 0; i < MR; i++) wv[i] = SFX(deq16)(T, p[i], g, lut[i], idx[i]);
			for (int j = 0; j < NR; j++) {
				__m512 xv = _mm512_loadu_ps((const float *)(a + (size_t)j * as) + 32 * b + 16 * g);
				for (int i = 0; i < MR; i++) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
			}
		}
	}
	SFX(store_tile)(acc, MR, NR, out, ldo);
}

// deq_row writes n values of the legacy row at x to y, the same bits as
// tk_dequant_row. It is where a large batch first touches each weight, so
// it prefetches like the tiles do.
static inline __attribute__((always_inline)) void SFX(deq_row_body)(const int T, const uint8_t *x, float *y, int n) {
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : 34;
	for (int b = 0; b < n / 32; b++, x += bb, y += 32) {
		_mm_prefetch((const char *)x + 4 * TK_PF_DIST, _MM_HINT_T0);
		__m512 lut = T == TK_Q8_0 ? _mm512_setzero_ps() : SFX(lut16)(T, x);
		__m512i idx = SFX(qidx)(T, x);
		_mm512_storeu_ps(y, SFX(deq16)(T, x, 0, lut, idx));
		_mm512_storeu_ps(y + 16, SFX(deq16)(T, x, 1, lut, idx));
	}
}

static void SFX(deq_row_q4_0)(const uint8_t *x, float *y, int n) { SFX(deq_row_body)(TK_Q4_0, x, y, n); }
static void SFX(deq_row_q4_1)(const uint8_t *x, float *y, int n) { SFX(deq_row_body)(TK_Q4_1, x, y, n); }
static void SFX(deq_row_q8_0)(const uint8_t *x, float *y, int n) { SFX(deq_row_body)(TK_Q8_0, x, y, n); }

// legacy_step adds blocks b and b+1 (b alone when TWO is 0) of the tile's
// pairs to acc and summ; see legacy_body.
static inline __attribute__((always_inline)) void SFX(legacy_step)(
    const int T, const int TWO, int b, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, __m512 acc[TK_MR][TK_NR], __m128 summ[TK_MR]) {
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : T == TK_Q5_0 ? 22 : T == TK_Q5_1 ? 24 : 34;
	const size_t qoff = T == TK_Q4_0 ? 2 : T == TK_Q4_1 ? 4 : T == TK_Q5_0 ? 6 : T == TK_Q5_1 ? 8 : 2;
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	const __m512i bit4 = _mm512_set1_epi8(0x10);
	// Quant bytes [qs_b, qs_b, qs_b1, qs_b1] by 128-bit lane; shifting the
	// odd lanes by four leaves each block's 32 values in order.
	const __m512i nshift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
	__m512i wq[TK_MR];
	__mmask64 wneg[TK_MR];
	__m512 dw[TK_MR];
	float mw[TK_MR][2];
	for (int i = 0; i < MR; i++) {
		const uint8_t *p0 = w + (size_t)i * ws + (size_t)b * bb;
		const uint8_t *p1 = TWO ? p0 + bb : p0;
		_mm_prefetch((const char *)p0 + TK_PF_DIST, _MM_HINT_T0);
		float d0 = SFX(h2f)(p0), d1 = SFX(h2f)(p1);
		dw[i] = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(d0))),
		                                            _mm256_castps_pd(_mm256_set1_ps(d1)), 1));
		if (T == TK_Q8_0) {
			// Signed x signed: vpdpbusd takes |w| and the activation with
			// w's sign moved onto it.
			__m256i lo = _mm256_loadu_si256((const __m256i *)(p0 + 2));
			__m512i q = TWO ? _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)(p1 + 2)), 1)
			                : _mm512_zextsi256_si512(lo);
			wneg[i] = _mm512_movepi8_mask(q);
			wq[i] = _mm512_abs_epi8(q);
			continue;
		}
		__m256i q2 = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p0 + qoff))),
		                                     _mm_loadu_si128((const __m128i *)(p1 + qoff)), 1);
		__m512i q = _mm512_castsi256_si512(q2);
		q = _mm512_and_si512(_mm512_srlv_epi64(_mm512_shuffle_i64x2(q, q, 0x50), nshift), m4);
		if (T == TK_Q5_0 || T == TK_Q5_1) {
			uint32_t h0, h1;
			memcpy(&h0, p0 + (T == TK_Q5_0 ? 2 : 4), 4);
			memcpy(&h1, p1 + (T == TK_Q5_0 ? 2 : 4), 4);
			q = _mm512_or_si512(q, _mm512_maskz_mov_epi8((__mmask64)h0 | (__mmask64)h1 << 32, bit4));
		}
		wq[i] = TWO ? q : _mm512_zextsi256_si512(_mm512_castsi512_si256(q));
		switch (T) {
		case TK_Q4_0:
			mw[i][0] = -8.0f * d0;
			mw[i][1] = -8.0f * d1;
			break;
		case TK_Q5_0:
			mw[i][0] = -16.0f * d0;
			mw[i][1] = -16.0f * d1;
			break;
		default:  // Q4_1, Q5_1: the stored minimum
			mw[i][0] = SFX(h2f)(p0 + 2);
			mw[i][1] = SFX(h2f)(p1 + 2);
		}
	}
	if (T != TK_Q8_0) {
		for (int h = 0; h <= TWO; h++) {
			// Built in registers: scalar stores read back as one vector
			// would stall on store forwarding every block.
#define SA(j) ((j) < NR ? ((const tk_q8a *)(a + (size_t)(j) * as) + b + h)->s : 0.0f)
			__m128 sv = _mm_set_ps(SA(3), SA(2), SA(1), SA(0));
#undef SA
			for (int i = 0; i < MR; i++) summ[i] = _mm_fmadd_ps(_mm_set1_ps(mw[i][h]), sv, summ[i]);
		}
	}
	for (int j = 0; j < NR; j++) {
		const tk_q8a *a0 = (const tk_q8a *)(a + (size_t)j * as) + b;
		const tk_q8a *a1 = TWO ? a0 + 1 : a0;
		__m256i alo = _mm256_loadu_si256((const __m256i *)a0->qs);
		__m512i aq = TWO ? _mm512_inserti64x4(_mm512_castsi256_si512(alo), _mm256_loadu_si256((const __m256i *)a1->qs), 1)
		                 : _mm512_zextsi256_si512(alo);
		__m512 da = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(a0->d))),
		                                                _mm256_castps_pd(_mm256_set1_ps(a1->d)), 1));
		for (int i = 0; i < MR; i++) {
			__m512i av = T == TK_Q8_0 ? _mm512_mask_sub_epi8(aq, wneg[i], _mm512_setzero_si512(), aq) : aq;
			__m512i l = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[i], av);
			acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l), _mm512_mul_ps(dw[i], da), acc[i][j]);
		}
	}
}

// legacy_body is the 8-bit-activation tile of the 32-value quants, two
// blocks per 512-bit vpdpbusd. Lanes 0-7 of a pair's accumulator take the
// even blocks, lanes 8-15 the odd ones; a lone last block runs with the
// upper half zero, so it adds +0 there. Integer block sums are exact; the
// rounding is the per-block float FMA, the per-block offset FMA in summ and
// the fixed-order horizontal sum, all independent of the tile shape.
static inline __attribute__((always_inline)) void SFX(legacy_body)(
    const int T, int nb, const uint8_t *w, size_t ws, const int MR, const uint8_t *a,
    size_t as, const int NR, float *out, size_t ldo) {
	__m512 acc[TK_MR][TK_NR];
	// summ[i] lane j accumulates weight row i's offset term against
	// activation row j, one FMA per block in block order.
	__m128 summ[TK_MR];
	for (int i = 0; i < MR; i++) {
		for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_ps();
		summ[i] = _mm_setzero_ps();
	}
	int b = 0;
	for (; b + 2 <= nb; b += 2) SFX(legacy_step)(T, 1, b, w, ws, MR, a, as, NR, acc, summ);
	if (b < nb) {
		SFX(legacy_step)(T, 0, b, w, ws, MR, a, as, NR, acc, summ);
	}
	for (int i = 0; i < MR; i++) {
		float sm[4];
		_mm_storeu_ps(sm, summ[i]);
		for (int j = 0; j < NR; j++) out[(size_t)j * ldo + i] = SFX(hsum16)(acc[i][j]) + sm[j];
	}
}
