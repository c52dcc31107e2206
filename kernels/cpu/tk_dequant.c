// Half-float conversion, activation quantization and weight dequantization.
// These are plain C on purpose: they run once per row, not per weight, and one
// implementation keeps every instruction-set level bit-identical.
#include <math.h>
#include <string.h>

#include "tk.h"

float tk_f16_to_f32(uint16_t h) {
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	uint32_t bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else {  // subnormal: renormalise
			int e = -1;
			do {
				e++;
				man <<= 1;
			} while ((man & 0x400) == 0);
			bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
		}
	} else if (exp == 31) {
		bits = sign | 0x7f800000u | (man << 13);
	} else {
		bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t tk_f32_to_f16(float f) {
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t absx = x & 0x7fffffff;
	if (absx >= 0x7f800000u) {  // inf or nan
		return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
	}
	if (absx >= 0x477ff000u) {  // rounds to >= 65520: overflow
		return (uint16_t)(sign | 0x7c00);
	}
	if (absx < 0x38800000u) {  // below the smallest normal half
		if (absx < 0x33000000u) {
			return (uint16_t)sign;
		}
		uint32_t e = absx >> 23;
		uint32_t m = (absx & 0x7fffff) | 0x800000;
		uint32_t shift = 126 - e;  // value = m*2^(e-150); half subnormal unit 2^-24
		uint32_t keep = m >> shift;
		uint32_t rem = m & ((1u << shift) - 1);
		uint32_t half = 1u << (shift - 1);
		if (rem > half || (rem == half && (keep & 1))) {
			keep++;
		}
		return (uint16_t)(sign | keep);
	}
	uint32_t bits = absx - 0x38000000u;  // rebias exponent 127 -> 15
	uint32_t keep = bits >> 13;
	uint32_t rem = bits & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (keep & 1))) {
		keep++;
	}
	return (uint16_t)(sign | keep);
}

// round_even rounds to nearest, ties to even, like the SIMD conversions.
static inline int round_even(float x) { return (int)nearbyintf(x); }

void tk_quantize_q8a(const float *x, tk_q8a *y, int n) {
	for (int b = 0; b < n / 32; b++, x += 32) {
		float amax = 0;
		for (int j = 0; j < 32; j++) {
			float v = fabsf(x[j]);
			amax = v > amax ? v : amax;
		}
		float d = amax / 127.0f;
		float id = d != 0 ? 1.0f / d : 0.0f;
		int sum = 0;
		for (int j = 0; j < 32; j++) {
			int q = round_even(x[j] * id);
			q = q > 127 ? 127 : (q < -127 ? -127 : q);
			y[b].qs[j] = (int8_t)q;
			sum += q;
		}
		y[b].d = d;
		y[b].s = d * (float)sum;
	}
}

void tk_quantize_q8k(const float *x, tk_q8k *y, int n) {
	for (int b = 0; b < n / 256; b++, x += 256) {
		float amax = 0;
		for (int j = 0; j < 256; j++) {
			float v = fabsf(x[j]);
			amax = v > amax ? v : amax;
		}
		float d = amax / 127.0f;
		float id = d != 0 ? 1.0f / d : 0.0f;
		for (int g = 0; g < 16; g++) {
			int sum = 0;
			for (int j = 16 * g; j < 16 * g + 16; j++) {
				int q = round_even(x[j] * id);
				q = q > 127 ? 127 : (q < -127 ? -127 : q);
				y[b].qs[j] = (int8_t)q;
				sum += q;
			}
			y[b].bsums[g] = (int16_t)sum;
		}
		y[b].d = d;
	}
}

size_t tk_act_bytes(int t, int n) {
	switch (t) {
	case TK_Q4_0: case TK_Q4_1: case TK_Q5_0: case TK_Q5_1: case TK_Q8_0:
		return (size_t)(n / 32) * sizeof(tk_q8a);
	case TK_Q4_K: case TK_Q5_K: case TK_Q6_K:
		return (size_t)(n / 256) * sizeof(tk_q8k);
	}
	return 0;
}

size_t tk_row_bytes(int t, int n) {
	switch (t) {
	case TK_F32: return (size_t)n * 4;
	case TK_F16: case TK_BF16: return (size_t)n * 2;
	case TK_Q4_0: return (size_t)(n / 32) * 18;
	case TK_Q4_1: return (size_t)(n / 32) * 20;
	case TK_Q5_0: return (size_t)(n / 32) * 22;
	case TK_Q5_1: return (size_t)(n / 32) * 24;
	case TK_Q8_0: return (size_t)(n / 32) * 34;
	case TK_Q4_K: return (size_t)(n / 256) * 144;
	case TK_Q5_K: return (size_t)(n / 256) * 176;
	case TK_Q6_K: return (size_t)(n / 256) * 210;
	}
	return 0;
}

static inline float rd16(const uint8_t *p) { return tk_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// k_scale_min decodes the 6-bit scale and min of sub-block j of a Q4_K/Q5_K
// superblock (the 12-byte packed scales).
static inline void k_scale_min(int j, const uint8_t *s, int *sc, int *mn) {
	if (j < 4) {
		*sc = s[j] & 63;
		*mn = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
		*mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

// Cloned per instruction set (GCC picks one at load time through an ifunc):
// the loops below are shaped for the vectoriser, and every clone performs
// the same per-element multiply and add, so they produce identical values.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
int tk_dequant_row(int t, const uint8_t *x, float *y, int n) {
	switch (t) {
	case TK_F32:
		memcpy(y, x, (size_t)n * 4);
		return 0;
	case TK_F16:
		for (int i = 0; i < n; i++) y[i] = rd16(x + 2 * i);
		return 0;
	case TK_BF16:
		for (int i = 0; i < n; i++) {
			uint32_t b = (uint32_t)(x[2 * i] | x[2 * i + 1] << 8) << 16;
			memcpy(&y[i], &b, 4);
		}
		return 0;
	case TK_Q4_0: case TK_Q4_1: case TK_Q5_0: case TK_Q5_1: case TK_Q8_0: {
		size_t bb = tk_row_bytes(t, 32);
		for (int b = 0; b < n / 32; b++, x += bb, y += 32) {
			float d = rd16(x);
			if (t == TK_Q8_0) {
				for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)x[2 + j] * d;
				continue;
			}
			float m = 0;
			const uint8_t *qs = x + 2;
			uint32_t qh = 0;
			int bias = 8;
			if (t == TK_Q4_1) { m = rd16(x + 2); qs = x + 4; bias = 0; }
			if (t == TK_Q5_0) { qh = rd32(x + 2); qs = x + 6; bias = 16; }
			if (t == TK_Q5_1) { m = rd16(x + 2); qh = rd32(x + 4); qs = x + 8; bias = 0; }
			int five = t == TK_Q5_0 || t == TK_Q5_1;
			for (int j = 0; j < 16; j++) {
				int lo = qs[j] & 0xf, hi = qs[j] >> 4;
				if (five) {
					lo |= ((qh >> j) & 1) << 4;
					hi |= ((qh >> (j + 16)) & 1) << 4;
				}
				y[j] = (float)(lo - bias) * d + m;
				y[j + 16] = (float)(hi - bias) * d + m;
			}
		}
		return 0;
	}
	case TK_Q4_K: case TK_Q5_K: {
		size_t bb = t == TK_Q4_K ? 144 : 176;
		for (int b = 0; b < n / 256; b++, x += bb) {
			float d = rd16(x), dmin = rd16(x + 2);
			const uint8_t *sc = x + 4;
			const uint8_t *qh = x + 16;
			const uint8_t *qs = t == TK_Q4_K ? x + 16 : x + 48;
			for (int c = 0; c < 4; c++) {
				int s0, m0, s1, m1;
				k_scale_min(2 * c, sc, &s0, &m0);
				k_scale_min(2 * c + 1, sc, &s1, &m1);
				for (int l = 0; l < 32; l++) {
					int lo = qs[32 * c + l] & 0xf, hi = qs[32 * c + l] >> 4;
					if (t == TK_Q5_K) {
						lo += (qh[l] & (1 << (2 * c))) ? 16 : 0;
						hi += (qh[l] & (2 << (2 * c))) ? 16 : 0;
					}
					y[64 * c + l] = d * (float)s0 * (float)lo - dmin * (float)m0;
					y[64 * c + 32 + l] = d * (float)s1 * (float)hi - dmin * (float)m1;
				}
			}
			y += 256;
		}
		return 0;
	}
	case TK_Q6_K:
		for (int b = 0; b < n / 256; b++, x += 210) {
			const uint8_t *ql = x, *qh = x + 128;
			const int8_t *sc = (const int8_t *)(x + 192);
			float d = rd16(x + 208);
			for (int half = 0; half < 2; half++) {
				int8_t q[128];
				for (int l = 0; l < 32; l++) {
					q[l] = (int8_t)(((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32);
					q[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
					q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
					q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
				}
				for (int g = 0; g < 8; g++) {
					const float ds = d * (float)sc[g];
					for (int m = 16 * g; m < 16 * g + 16; m++) y[m] = ds * (float)q[m];
				}
				y += 128;
				ql += 64;
				qh += 32;
				sc += 8;
			}
		}
		return 0;
	}
	return -1;
}
