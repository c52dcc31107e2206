// K-quant dot products against tk_q8k, in plain C shaped for the compiler's
// vectoriser: every inner loop is a fixed-length integer multiply-add over
// contiguous bytes, which is exact, so the vectorised and scalar builds give
// identical results. Included by tk_generic.c and, compiled for AVX2 or
// AVX-512, by the SIMD files (SFX names each copy).

static inline void SFX(scale_min_k4)(int j, const uint8_t *s, int *sc, int *mn) {
	if (j < 4) {
		*sc = s[j] & 63;
		*mn = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
		*mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

static inline float SFX(kq_h2f)(const uint8_t *p) { return tk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static float SFX(dot_q6_k)(int nb, const uint8_t *w, const tk_q8k *a) {
	float acc = 0;
	for (int b = 0; b < nb; b++, a++, w += 210) {
		__builtin_prefetch(w + 4096);
		__builtin_prefetch(w + 4096 + 128);
		const uint8_t *ql = w, *qh = w + 128;
		const int8_t *sc = (const int8_t *)(w + 192);
		const int8_t *q8 = a->qs;
		int sumi = 0;
		for (int half = 0; half < 2; half++) {
			// Decode the half's 128 6-bit values (minus 32) in order, then
			// dot each run of 16 with its scale.
			int8_t q[128];
			for (int l = 0; l < 32; l++) {
				q[l] = (int8_t)(((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32);
				q[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
				q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
				q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
			}
			for (int g = 0; g < 8; g++) {
				int s16 = 0;
				for (int m = 16 * g; m < 16 * g + 16; m++) s16 += q[m] * q8[m];
				sumi += sc[g] * s16;
			}
			ql += 64;
			qh += 32;
			sc += 8;
			q8 += 128;
		}
		acc += SFX(kq_h2f)(w + 208) * a->d * (float)sumi;
	}
	return acc;
}

// dot_q45_k is Q4_K (five = 0) or Q5_K (five = 1).
static inline float SFX(dot_q45_k)(const int five, int nb, const uint8_t *w, const tk_q8k *a) {
	float acc = 0;
	const size_t bb = five ? 176 : 144;
	for (int b = 0; b < nb; b++, a++, w += bb) {
		__builtin_prefetch(w + 4096);
		__builtin_prefetch(w + 4096 + 128);
		float d = SFX(kq_h2f)(w), dmin = SFX(kq_h2f)(w + 2);
		const uint8_t *sc = w + 4;
		const uint8_t *qh = w + 16;
		const uint8_t *qs = five ? w + 48 : w + 16;
		int sumi = 0, summ = 0;
		for (int c = 0; c < 4; c++) {
			int s0, m0, s1, m1;
			SFX(scale_min_k4)(2 * c, sc, &s0, &m0);
			SFX(scale_min_k4)(2 * c + 1, sc, &s1, &m1);
			const uint8_t *q = qs + 32 * c;
			const int8_t *y = a->qs + 64 * c;
			int lo_sum = 0, hi_sum = 0;
			if (five) {
				const int bl = 2 * c, bh = 2 * c + 1;
				for (int l = 0; l < 32; l++) {
					lo_sum += ((q[l] & 0xf) | (((qh[l] >> bl) & 1) << 4)) * y[l];
					hi_sum += ((q[l] >> 4) | (((qh[l] >> bh) & 1) << 4)) * y[l + 32];
				}
			} else {
				for (int l = 0; l < 32; l++) {
					lo_sum += (q[l] & 0xf) * y[l];
					hi_sum += (q[l] >> 4) * y[l + 32];
				}
			}
			sumi += s0 * lo_sum + s1 * hi_sum;
			summ += m0 * (a->bsums[4 * c] + a->bsums[4 * c + 1]) +
			        m1 * (a->bsums[4 * c + 2] + a->bsums[4 * c + 3]);
		}
		acc += a->d * (d * (float)sumi - dmin * (float)summ);
	}
	return acc;
}

#define KQ_TILE(NAME, CALL)                                                           \
	static void SFX(NAME)(int nb, const uint8_t *w, size_t wstride, int mr,        \
	                      const uint8_t *a, size_t astride, int nr, float *out,    \
	                      size_t ldo) {                                            \
		for (int j = 0; j < nr; j++) {                                         \
			for (int i = 0; i < mr; i++) {                                 \
				const uint8_t *wi = w + (size_t)i * wstride;           \
				const tk_q8k *aj = (const tk_q8k *)(a + (size_t)j * astride); \
				out[(size_t)j * ldo + i] = CALL;                       \
			}                                                              \
		}                                                                      \
	}

KQ_TILE(tile_q4_k, SFX(dot_q45_k)(0, nb, wi, aj))
KQ_TILE(tile_q5_k, SFX(dot_q45_k)(1, nb, wi, aj))
KQ_TILE(tile_q6_k, SFX(dot_q6_k)(nb, wi, aj))
#undef KQ_TILE

static void SFX(fill_kquant)(tk_kernels *k) {
	k->tile[TK_Q4_K] = SFX(tile_q4_k);
	k->tile[TK_Q5_K] = SFX(tile_q5_k);
	k->tile[TK_Q6_K] = SFX(tile_q6_k);
}
