// cuda_runtime.h for the host emulation (see kquant_check.cpp and
// legacy_check.cpp): just enough of CUDA for the device code in
// ../csrc/kquant.cuh, ../csrc/legacy.cuh and ../csrc/common.cuh to
// compile with a C++20 host compiler and run, one std::thread per CUDA thread.
// Warp shuffles synchronise the 32 threads of a warp on a barrier, so code
// between shuffles may run in any interleaving, as on a GPU; the float
// intrinsics round as the device's do (build with -ffp-contract=off so that
// plain float expressions are not fused either).
#ifndef TANDEM_EMU_CUDA_RUNTIME_H
#define TANDEM_EMU_CUDA_RUNTIME_H

#include <algorithm>
#include <barrier>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(x)

typedef int cudaError_t;
typedef void *cudaStream_t;
#define cudaSuccess 0
static inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }

struct int4 {
	int x, y, z, w;
};
struct uint4 {
	unsigned x, y, z, w;
};
struct int2 {
	int x, y;
};
struct float2 {
	float x, y;
};
struct float4 {
	float x, y, z, w;
};
struct dim3 {
	unsigned x, y, z;
	dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static inline int4 make_int4(int a, int b, int c, int d) { return {a, b, c, d}; }
static inline int2 make_int2(int a, int b) { return {a, b}; }
static inline float2 make_float2(float a, float b) { return {a, b}; }

// Halves are their IEEE binary16 bits, as in device memory.
struct half {
	uint16_t bits;
};
struct half2 {
	half x, y;
};
static inline float emu_f16(uint16_t h) {
	int e = (h >> 10) & 31, m = h & 1023;
	float v = e == 0 ? std::ldexp((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp((float)(m | 1024), e - 25);
	return h >> 15 ? -v : v;
}
static inline float __half2float(half h) { return emu_f16(h.bits); }
static inline float2 __half22float2(half2 h) { return {emu_f16(h.x.bits), emu_f16(h.y.bits)}; }
// __float2half_rn: round to nearest even, subnormals and overflow to
// infinity included, NaN kept a (quiet) NaN.
static inline half __float2half_rn(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t a = u & 0x7FFFFFFFu;
	if (a >= 0x7F800000u) return {(uint16_t)(sign | (a > 0x7F800000u ? 0x7E00u : 0x7C00u))};
	if (a >= 0x477FF000u) return {(uint16_t)(sign | 0x7C00u)}; // 65520 and up round to infinity
	int e = (int)(a >> 23) - 127;
	if (e < -25) return {sign}; // below a quarter of the smallest subnormal
	uint32_t m = (a & 0x7FFFFFu) | 0x800000u; // the value is m * 2^(e-23)
	// Shift m to units of the result's last place: 2^(e-10) for normal
	// results, 2^-24 for subnormal ones. A rounding carry into the exponent
	// (or from subnormal to normal) lands in the right place by addition.
	int shift = e < -14 ? -(e + 1) : 13;
	uint32_t q = m >> shift, rest = m & ((1u << shift) - 1), halfway = 1u << (shift - 1);
	if (rest > halfway || (rest == halfway && (q & 1))) q++;
	uint32_t bits = e < -14 ? q : ((uint32_t)(e + 15) << 10) + (q - 1024);
	return {(uint16_t)(sign | bits)};
}
static inline half2 __halves2half2(half a, half b) { return {a, b}; }
static inline float __uint_as_float(uint32_t u) {
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline int __dp4a(int a, int b, int c) {
	for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
	return c;
}
// __vsub4: per-byte subtraction modulo 256.
static inline unsigned __vsub4(unsigned a, unsigned b) {
	unsigned r = 0;
	for (int i = 0; i < 4; i++) r |= ((((a >> (8 * i)) & 0xFFu) - ((b >> (8 * i)) & 0xFFu)) & 0xFFu) << (8 * i);
	return r;
}
// volatile keeps each operation a separately rounded float32 result.
static inline float __fmul_rn(float a, float b) {
	volatile float r = a * b;
	return r;
}
static inline float __fadd_rn(float a, float b) {
	volatile float r = a + b;
	return r;
}
static inline float __fsub_rn(float a, float b) {
	volatile float r = a - b;
	return r;
}
static inline float __fdiv_rn(float a, float b) {
	volatile float r = a / b;
	return r;
}
// cvt.rni.s32.f32: round half to even, NaN to 0, saturating.
static inline int __float2int_rn(float x) {
	if (x != x) return 0;
	if (x >= 2147483648.f) return INT_MAX;
	if (x <= -2147483648.f) return INT_MIN;
	return (int)std::nearbyint(x);
}

struct emu_warp {
	std::barrier<> bar{32};
	uint64_t slot[32];
};
extern thread_local dim3 threadIdx, blockIdx;
extern thread_local emu_warp *emu_cur_warp;
extern dim3 blockDim;

template <class T>
static inline T __shfl_xor_sync(unsigned, T v, int o) {
	static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
	int lane = threadIdx.x % 32;
	uint64_t u = 0;
	memcpy(&u, &v, sizeof v);
	emu_cur_warp->slot[lane] = u;
	emu_cur_warp->bar.arrive_and_wait();
	uint64_t r = emu_cur_warp->slot[lane ^ o];
	emu_cur_warp->bar.arrive_and_wait();
	T out;
	memcpy(&out, &r, sizeof out);
	return out;
}

// emu_launch runs f on every thread of the grid, one thread block at a
// time. A warp must leave f whole (as the kernels' early returns do), or the
// shuffles of its other threads would wait forever.
static inline void emu_launch(dim3 grid, int threads, const std::function<void()> &f) {
	blockDim = dim3(threads);
	for (unsigned by = 0; by < grid.y; by++) {
		for (unsigned bx = 0; bx < grid.x; bx++) {
			std::vector<emu_warp> warps(threads / 32);
			std::vector<std::thread> ts;
			for (int t = 0; t < threads; t++) {
				ts.emplace_back([&, t] {
					threadIdx = dim3(t);
					blockIdx = dim3(bx, by);
					emu_cur_warp = &warps[t / 32];
					f();
				});
			}
			for (auto &t : ts) t.join();
		}
	}
}

#endif
