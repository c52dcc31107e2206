// Portable kernels: every weight type as a per-pair dot product in plain C.
// They define the results on CPUs without AVX2 and are the fallback for the
// types the SIMD levels do not specialise. Each pair is computed by the same
// function whatever the tile shape, so they are batch-invariant by
// construction.
#include <math.h>
#include <string.h>

#include "tk.h"

static inline float rd16(const uint8_t *p) { return tk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline float bf16(const uint8_t *p) {
	uint32_t b = (uint32_t)(p[0] | p[1] << 8) << 16;
	float f;
	memcpy(&f, &b, 4);
	return f;
}

// Legacy quants against tk_q8a. The integer sum of a block is exact; the
// weight offsets enter through the activation's s = d*sum(q).
static float dot_legacy(int t, int nb, const uint8_t *w, const tk_q8a *a) {
	float acc = 0;
	size_t bb = tk_row_bytes(t, 32);
	for (int b = 0; b < nb; b++, w += bb, a++) {
		float d = rd16(w);
		int s = 0;
		if (t == TK_Q8_0) {
			for (int j = 0; j < 32; j++) s += (int8_t)w[2 + j] * a->qs[j];
			acc += d * a->d * (float)s;
			continue;
		}
		float m = 0;
		const uint8_t *qs = w + 2;
		uint32_t qh = 0;
		int bias = 8;
		if (t == TK_Q4_1) { m = rd16(w + 2); qs = w + 4; bias = 0; }
		if (t == TK_Q5_0) { qh = rd32(w + 2); qs = w + 6; bias = 16; }
		if (t == TK_Q5_1) { m = rd16(w + 2); qh = rd32(w + 4); qs = w + 8; bias = 0; }
		int five = t == TK_Q5_0 || t == TK_Q5_1;
		for (int j = 0; j < 16; j++) {
			int lo = qs[j] & 0xf, hi = qs[j] >> 4;
			if (five) {
				lo |= ((qh >> j) & 1) << 4;
				hi |= ((qh >> (j + 16)) & 1) << 4;
			}
			s += lo * a->qs[j] + hi * a->qs[j + 16];
		}
		// sum((q-bias)*d*qa*da) + m*sum(qa*da) = d*da*s - bias*d*sa + m*sa
		acc += d * a->d * (float)s + (m - (float)bias * d) * a->s;
	}
	return acc;
}

static void scale_min_k4(int j, const uint8_t *s, int *sc, int *mn) {
	if (j < 4) {
		*sc = s[j] & 63;
		*mn = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
		*mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

// K-quants against tk_q8k.
static float dot_kquant(int t, int nb, const uint8_t *w, const tk_q8k *a) {
	float acc = 0;
	for (int b = 0; b < nb; b++, a++) {
		if (t == TK_Q6_K) {
			const uint8_t *ql = w, *qh = w + 128;
			const int8_t *sc = (const int8_t *)(w + 192);
			float d = rd16(w + 208);
			int sumi = 0;
			for (int half = 0; half < 2; half++) {
				const int8_t *q8 = a->qs + 128 * half;
				int s[8] = {0};
				for (int l = 0; l < 32; l++) {
					int is = l / 16;
					int q1 = (int)((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4) - 32;
					int q2 = (int)((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) - 32;
					int q3 = (int)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
					int q4 = (int)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
					s[is] += q1 * q8[l];
					s[is + 2] += q2 * q8[l + 32];
					s[is + 4] += q3 * q8[l + 64];
					s[is + 6] += q4 * q8[l + 96];
				}
				for (int k = 0; k < 8; k++) sumi += sc[k] * s[k];
				ql += 64;
				qh += 32;
				sc += 8;
			}
			acc += d * a->d * (float)sumi;
			w += 210;
			continue;
		}
		float d = rd16(w), dmin = rd16(w + 2);
		const uint8_t *sc = w + 4;
		const uint8_t *qh = w + 16;
		const uint8_t *qs = t == TK_Q4_K ? w + 16 : w + 48;
		int sumi = 0, summ = 0;
		for (int c = 0; c < 4; c++) {
			int s0, m0, s1, m1;
			scale_min_k4(2 * c, sc, &s0, &m0);
			scale_min_k4(2 * c + 1, sc, &s1, &m1);
			int lo_sum = 0, hi_sum = 0;
			for (int l = 0; l < 32; l++) {
				int lo = qs[32 * c + l] & 0xf, hi = qs[32 * c + l] >> 4;
				if (t == TK_Q5_K) {
					lo += (qh[l] & (1 << (2 * c))) ? 16 : 0;
					hi += (qh[l] & (2 << (2 * c))) ? 16 : 0;
				}
				lo_sum += lo * a->qs[64 * c + l];
				hi_sum += hi * a->qs[64 * c + 32 + l];
			}
			sumi += s0 * lo_sum + s1 * hi_sum;
			summ += m0 * (a->bsums[4 * c] + a->bsums[4 * c + 1]) +
			        m1 * (a->bsums[4 * c + 2] + a->bsums[4 * c + 3]);
		}
		acc += a->d * (d * (float)sumi - dmin * (float)summ);
		w += t == TK_Q4_K ? 144 : 176;
	}
	return acc;
}

static float dot_float(int t, int n, const uint8_t *w, const float *x) {
	float acc = 0;
	for (int i = 0; i < n; i++) {
		float v;
		switch (t) {
		case TK_F16: v = rd16(w + 2 * i); break;
		case TK_BF16: v = bf16(w + 2 * i); break;
		default: memcpy(&v, w + 4 * i, 4);
		}
		acc += v * x[i];
	}
	return acc;
}

// TILE defines the tile function of type T; nb counts weight blocks (values
// for the float types, whose block size is 1).
#define TILE(NAME, CALL)                                                          \
	static void NAME(int nb, const uint8_t *w, size_t wstride, int mr,         \
	                 const uint8_t *a, size_t astride, int nr, float *out,     \
	                 size_t ldo) {                                             \
		for (int j = 0; j < nr; j++) {                                     \
			for (int i = 0; i < mr; i++) {                             \
				const uint8_t *wi = w + (size_t)i * wstride;       \
				const uint8_t *aj = a + (size_t)j * astride;       \
				out[(size_t)j * ldo + i] = CALL;                   \
			}                                                          \
		}                                                                  \
	}

TILE(tile_q4_0, dot_legacy(TK_Q4_0, nb, wi, (const tk_q8a *)aj))
TILE(tile_q4_1, dot_legacy(TK_Q4_1, nb, wi, (const tk_q8a *)aj))
TILE(tile_q5_0, dot_legacy(TK_Q5_0, nb, wi, (const tk_q8a *)aj))
TILE(tile_q5_1, dot_legacy(TK_Q5_1, nb, wi, (const tk_q8a *)aj))
TILE(tile_q8_0, dot_legacy(TK_Q8_0, nb, wi, (const tk_q8a *)aj))
TILE(tile_q4_k, dot_kquant(TK_Q4_K, nb, wi, (const tk_q8k *)aj))
TILE(tile_q5_k, dot_kquant(TK_Q5_K, nb, wi, (const tk_q8k *)aj))
TILE(tile_q6_k, dot_kquant(TK_Q6_K, nb, wi, (const tk_q8k *)aj))
TILE(tile_f32, dot_float(TK_F32, nb, wi, (const float *)aj))
TILE(tile_f16, dot_float(TK_F16, nb, wi, (const float *)aj))
TILE(tile_bf16, dot_float(TK_BF16, nb, wi, (const float *)aj))

static void g_cvt_f16(float *dst, const uint16_t *src, int n) {
	for (int i = 0; i < n; i++) dst[i] = tk_f16_to_f32(src[i]);
}

static void g_cvt_i8(float *dst, const int8_t *src, float scale, int n) {
	for (int i = 0; i < n; i++) dst[i] = (float)src[i] * scale;
}

static void g_scores(float *s, const float *q, const float *K, int n, int hd, float scale) {
	for (int j = 0; j < n; j++) {
		float d = 0;
		for (int i = 0; i < hd; i++) d += q[i] * K[(size_t)j * hd + i];
		s[j] = d * scale;
	}
}

static float g_exp_sum(float *s, int n, float m) {
	float sum = 0;
	for (int j = 0; j < n; j++) {
		s[j] = expf(s[j] - m);
		sum += s[j];
	}
	return sum;
}

static void g_wsum(float *acc, const float *p, const float *V, int n, int hd) {
	for (int j = 0; j < n; j++) {
		for (int i = 0; i < hd; i++) acc[i] += p[j] * V[(size_t)j * hd + i];
	}
}

static void g_scale(float *acc, float alpha, int n) {
	for (int i = 0; i < n; i++) acc[i] *= alpha;
}

static void g_silu_mul(float *dst, const float *g, const float *u, int n) {
	for (int i = 0; i < n; i++) dst[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void tk_kernels_generic(tk_kernels *k) {
	memset(k, 0, sizeof(*k));
	k->name = "generic";
	k->mr = 4;
	k->nr = 4;
	k->tile[TK_Q4_0] = tile_q4_0;
	k->tile[TK_Q4_1] = tile_q4_1;
	k->tile[TK_Q5_0] = tile_q5_0;
	k->tile[TK_Q5_1] = tile_q5_1;
	k->tile[TK_Q8_0] = tile_q8_0;
	k->tile[TK_Q4_K] = tile_q4_k;
	k->tile[TK_Q5_K] = tile_q5_k;
	k->tile[TK_Q6_K] = tile_q6_k;
	k->tile[TK_F32] = tile_f32;
	k->tile[TK_F16] = tile_f16;
	k->tile[TK_BF16] = tile_bf16;
	k->cvt_f16 = g_cvt_f16;
	k->cvt_i8 = g_cvt_i8;
	k->scores = g_scores;
	k->exp_sum = g_exp_sum;
	k->wsum = g_wsum;
	k->silu_mul = g_silu_mul;
	k->scale = g_scale;
}

int tk_select(tk_kernels *k, int max_level) {
	tk_kernels_generic(k);
	if (max_level >= 2 && tk_kernels_avx512(k)) {
		return 2;
	}
	if (max_level >= 1 && tk_kernels_avx2(k)) {
		return 1;
	}
	return 0;
}
