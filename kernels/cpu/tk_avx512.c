// AVX-512 VNNI kernels (Intel Ice Lake / AMD Zen 4 on): the EVEX encoding
// gives the tiles 32 registers and vpdpbusd, the u8 x s8 dot product that
// replaces maddubs+madd; the full-precision tiles use 512-bit vectors
// (tk_simd512.h).
#include <math.h>
#include <string.h>

#include "tk.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,prefer-vector-width=256")
#include <immintrin.h>

#define SFX(n) n##_avx512
#define TK_VNNI 1
#define TK_W512 1
#define TK_MR 4
#define TK_NR 4
#include "tk_simd.h"
#include "tk_q8rows.h"

int tk_kernels_avx512(tk_kernels *k) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
	    !__builtin_cpu_supports("f16c") || !__builtin_cpu_supports("avx512f") ||
	    !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl") ||
	    !__builtin_cpu_supports("avx512vnni")) {
		return 0;
	}
	SFX(fill)(k);
	SFX(fill_rows)(k);
	k->name = "avx512vnni";
	return 1;
}
#else
int tk_kernels_avx512(tk_kernels *k) {
	(void)k;
	return 0;
}
#endif
