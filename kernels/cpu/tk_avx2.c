// AVX2 + FMA + F16C kernels (x86-64 CPUs from Haswell / Zen 1 on). The
// target pragma compiles only this file for AVX2; tk_select calls it only
// after __builtin_cpu_supports confirms the CPU runs it.
#include <math.h>
#include <string.h>

#include "tk.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#define SFX(n) n##_avx2
#define TK_VNNI 0
#define TK_W512 0
#define TK_MR 4
#define TK_NR 2
#include "tk_simd.h"

int tk_kernels_avx2(tk_kernels *k) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") ||
	    !__builtin_cpu_supports("f16c")) {
		return 0;
	}
	SFX(fill)(k);
	k->name = "avx2";
	return 1;
}
#else
int tk_kernels_avx2(tk_kernels *k) {
	(void)k;
	return 0;
}
#endif
