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

#define SFX(n) n##_generic
#include "tk_kquant.h"
#undef SFX

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
	fill_kquant_generic(k);
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
