// 8-bit-activation tiles of Q4_0, Q4_1 and Q8_0 with weight rows in vector
// lanes, included by tk_avx512.c after tk_simd.h.
//
// The column-lane tiles of tk_simd.h spend four vector operations per pair
// and block pair (vpdpbusd, convert, scale, FMA) and a horizontal sum per
// pair, so they run far below vpdpbusd's rate. Here one 512-bit register
// holds 16 weight rows: a 16x16-byte block of quants is transposed in
// registers into 4-byte column groups, and each vpdpbusd multiplies one
// group of all 16 rows by one broadcast 4-byte group of an activation row.
// Per activation row, a block then costs 8 vpdpbusd and 4 float operations
// for all 16 rows, and no horizontal sum is needed.
// The weights keep their GGUF layout: the transpose is a few shuffles per
// block, shared by every activation row of the tile.
//
// Per (weight row, activation row) pair the arithmetic is: for each block in
// order, acc = fma(float(isum), d_w*d_a, acc) then acc = fma(mw, s_a, acc),
// where isum is the block's exact integer dot product and mw*s_a the weight
// offset term (the Q4_1 minimum, -8*d_w for Q4_0, -128*d_w for Q8_0, whose
// quants are biased to unsigned). That sequence is the same for every tile
// shape and every lane, which keeps MatMul batch-invariant.

enum { RW_MR = 16, RW_NR = 16 };

// rw_rowlanes is, in lane L, the row that lane L holds after rw_transpose:
// lane 4s+q holds row 4q+s. The mapping is its own inverse, so the same
// vector also permutes lane order back to row order.
static inline __m512i SFX(rw_rowlanes)(void) {
	return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

// rw_load4 loads 16 bytes at off of rows 4q..4q+3 into 128-bit slots 0..3.
static inline __m512i SFX(rw_load4)(const uint8_t *const *p, int q, size_t off) {
	__m512i x = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p[4 * q] + off)));
	x = _mm512_inserti32x4(x, _mm_loadu_si128((const __m128i *)(p[4 * q + 1] + off)), 1);
	x = _mm512_inserti32x4(x, _mm_loadu_si128((const __m128i *)(p[4 * q + 2] + off)), 2);
	return _mm512_inserti32x4(x, _mm_loadu_si128((const __m128i *)(p[4 * q + 3] + off)), 3);
}

// rw_transpose turns the 16 bytes at off of 16 rows into z[g] (g < 4): lane
// 4s+q holds bytes 4g..4g+3 of row 4q+s.
static inline void SFX(rw_transpose)(const uint8_t *const *p, size_t off, __m512i z[4]) {
	__m512i x0 = SFX(rw_load4)(p, 0, off), x1 = SFX(rw_load4)(p, 1, off);
	__m512i x2 = SFX(rw_load4)(p, 2, off), x3 = SFX(rw_load4)(p, 3, off);
	__m512i t0 = _mm512_unpacklo_epi32(x0, x1), t1 = _mm512_unpackhi_epi32(x0, x1);
	__m512i t2 = _mm512_unpacklo_epi32(x2, x3), t3 = _mm512_unpackhi_epi32(x2, x3);
	z[0] = _mm512_unpacklo_epi64(t0, t2);
	z[1] = _mm512_unpackhi_epi64(t0, t2);
	z[2] = _mm512_unpacklo_epi64(t1, t3);
	z[3] = _mm512_unpackhi_epi64(t1, t3);
}

static inline __attribute__((always_inline)) void SFX(rows_body)(
    const int T, int nb, const uint8_t *w, size_t ws, int mr, const uint8_t *a, size_t as,
    const int NR, float *out, size_t ldo) {
	const size_t bb = T == TK_Q4_0 ? 18 : T == TK_Q4_1 ? 20 : 34;
	// Rows past mr repeat the last row: every load stays inside the matrix
	// and those lanes are never stored.
	const uint8_t *p[RW_MR];
	for (int r = 0; r < RW_MR; r++) p[r] = w + (size_t)(r < mr ? r : mr - 1) * ws;
	// Byte offset of each lane's row (clamped like p), for gathering the
	// block headers. It fits int32: NewWeight caps rows*cols at 2^31 and a
	// value takes at most 34/32 bytes, so min(rows-1, 15) rows stay below
	// 2^31 bytes (the worst case, 16 rows, reaches 15/16*34/32 of it).
	const __m512i lanes = SFX(rw_rowlanes)();
	const __m512i hoff = _mm512_mullo_epi32(_mm512_min_epi32(lanes, _mm512_set1_epi32(mr - 1)), _mm512_set1_epi32((int)ws));
	const __m512i m4 = _mm512_set1_epi8(0x0f);
	__m512 acc[RW_NR];
	for (int j = 0; j < NR; j++) acc[j] = _mm512_setzero_ps();
	for (int b = 0; b < nb; b++) {
		const size_t bo = (size_t)b * bb;
		// A tile's 16 rows are one contiguous range, read as 16 streams
		// that the hardware prefetcher follows poorly: stream the next
		// tile's range in linearly, an equal share per block.
		const char *next = (const char *)w + (size_t)RW_MR * ws + (size_t)b * RW_MR * bb;
		for (size_t l = 0; l < RW_MR * bb; l += 64) _mm_prefetch(next + l, _MM_HINT_T0);
		// u[k] holds column group k (4 values) of the block for all rows.
		__m512i u[8];
		__m512i z[4];
		if (T == TK_Q8_0) {
			const __m512i bias = _mm512_set1_epi8((char)0x80);
			SFX(rw_transpose)(p, bo + 2, z);
			for (int g = 0; g < 4; g++) u[g] = _mm512_xor_si512(z[g], bias);
			SFX(rw_transpose)(p, bo + 18, z);
			for (int g = 0; g < 4; g++) u[4 + g] = _mm512_xor_si512(z[g], bias);
		} else {
			SFX(rw_transpose)(p, bo + (T == TK_Q4_0 ? 2 : 4), z);
			for (int g = 0; g < 4; g++) {
				u[g] = _mm512_and_si512(z[g], m4);
				u[4 + g] = _mm512_and_si512(_mm512_srli_epi16(z[g], 4), m4);
			}
		}
		// Block headers of the 16 rows: d in the low half, and for Q4_1
		// the minimum in the high half.
		__m512i hd = _mm512_i32gather_epi32(_mm512_add_epi32(hoff, _mm512_set1_epi32((int)bo)), w, 1);
		__m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(hd));
		__m512 mw;
		if (T == TK_Q4_1) {
			mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(hd, 16)));
		} else {
			mw = _mm512_mul_ps(dw, _mm512_set1_ps(T == TK_Q4_0 ? -8.0f : -128.0f));
		}
		for (int j = 0; j < NR; j++) {
			const tk_q8a *ab = (const tk_q8a *)(a + (size_t)j * as) + b;
			int32_t g4[8];
			memcpy(g4, ab->qs, 32);
			// Four short independent chains keep many activation rows in
			// flight; integer sums are exact in any order.
			__m512i s[4];
			for (int c = 0; c < 4; c++) {
				s[c] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[c], _mm512_set1_epi32(g4[c]));
				s[c] = _mm512_dpbusd_epi32(s[c], u[4 + c], _mm512_set1_epi32(g4[4 + c]));
			}
			__m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3])));
			acc[j] = _mm512_fmadd_ps(f, _mm512_mul_ps(dw, _mm512_set1_ps(ab->d)), acc[j]);
			acc[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ab->s), acc[j]);
		}
	}
	// Back to row order, then store the mr valid rows.
	const __mmask16 keep = (__mmask16)((1u << mr) - 1);
	for (int j = 0; j < NR; j++) {
		_mm512_mask_storeu_ps(out + (size_t)j * ldo, keep, _mm512_permutexvar_ps(lanes, acc[j]));
	}
}

#define RW_TILE_FN(NAME, T)                                                                     \
	static void SFX(NAME)(int nb, const uint8_t *w, size_t ws, int mr, const uint8_t *a,     \
	                      size_t as, int nr, float *out, size_t ldo) {                     \
		switch (nr) {                                                                  \
		case 1: SFX(rows_body)(T, nb, w, ws, mr, a, as, 1, out, ldo); return;          \
		case 2: SFX(rows_body)(T, nb, w, ws, mr, a, as, 2, out, ldo); return;          \
		case 3: SFX(rows_body)(T, nb, w, ws, mr, a, as, 3, out, ldo); return;          \
		case 4: SFX(rows_body)(T, nb, w, ws, mr, a, as, 4, out, ldo); return;          \
		case 5: SFX(rows_body)(T, nb, w, ws, mr, a, as, 5, out, ldo); return;          \
		case 6: SFX(rows_body)(T, nb, w, ws, mr, a, as, 6, out, ldo); return;          \
		case 7: SFX(rows_body)(T, nb, w, ws, mr, a, as, 7, out, ldo); return;          \
		case 8: SFX(rows_body)(T, nb, w, ws, mr, a, as, 8, out, ldo); return;          \
		case 9: SFX(rows_body)(T, nb, w, ws, mr, a, as, 9, out, ldo); return;          \
		case 10: SFX(rows_body)(T, nb, w, ws, mr, a, as, 10, out, ldo); return;          \
		case 11: SFX(rows_body)(T, nb, w, ws, mr, a, as, 11, out, ldo); return;          \
		case 12: SFX(rows_body)(T, nb, w, ws, mr, a, as, 12, out, ldo); return;          \
		case 13: SFX(rows_body)(T, nb, w, ws, mr, a, as, 13, out, ldo); return;          \
		case 14: SFX(rows_body)(T, nb, w, ws, mr, a, as, 14, out, ldo); return;          \
		case 15: SFX(rows_body)(T, nb, w, ws, mr, a, as, 15, out, ldo); return;          \
		default: SFX(rows_body)(T, nb, w, ws, mr, a, as, 16, out, ldo); return;        \
		}                                                                              \
	}

RW_TILE_FN(rows_q4_0, TK_Q4_0)
RW_TILE_FN(rows_q4_1, TK_Q4_1)
RW_TILE_FN(rows_q8_0, TK_Q8_0)

// quant_q8a is tk_quantize_q8a vectorised with the same operations per
// value: the maximum skips NaNs as the scalar comparison does (vmaxps returns
// its second operand when either is NaN), the scale is computed in scalar
// code, x*id is one rounding, and vcvtps2dq rounds to nearest even like
// nearbyintf in the default rounding mode.
static void SFX(quant_q8a)(const float *x, tk_q8a *y, int n) {
	for (int b = 0; b < n / 32; b++, x += 32) {
		__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		__m512 m = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps());
		m = _mm512_max_ps(_mm512_abs_ps(v1), m);
		float amax = _mm512_reduce_max_ps(m);
		float d = amax / 127.0f;
		float id = d != 0 ? 1.0f / d : 0.0f;
		__m512 idv = _mm512_set1_ps(id);
		const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
		__m512i q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, idv)), lo), hi);
		__m512i q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, idv)), lo), hi);
		_mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(q0));
		_mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(q1));
		int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
		y[b].d = d;
		y[b].s = d * (float)sum;
	}
}

// fill_rows installs the row-lane tiles in place of the column-lane ones
// tk_simd.h's fill set for these types; tk_matmul sweeps them in RW_MR x
// RW_NR shapes.
static void SFX(fill_rows)(tk_kernels *k) {
	static const int types[] = {TK_Q4_0, TK_Q4_1, TK_Q8_0};
	k->tile[TK_Q4_0] = SFX(rows_q4_0);
	k->tile[TK_Q4_1] = SFX(rows_q4_1);
	k->tile[TK_Q8_0] = SFX(rows_q8_0);
	k->quant_q8a = SFX(quant_q8a);
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		k->tile_mr[types[i]] = RW_MR;
		k->tile_nr[types[i]] = RW_NR;
	}
}
