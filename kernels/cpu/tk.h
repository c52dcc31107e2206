// Shared declarations of the C side of Tandem's CPU backend.
//
// Layout contracts:
//   * Weights are ggml blocks exactly as stored in GGUF (see tk_dequant.c).
//   * Activations are quantized once per MatMul into one of two internal
//     formats: tk_q8a (32 values, for the legacy 32-value quants) or tk_q8k
//     (256 values, for the K-quants). Both use a symmetric scale
//     d = max|x|/127 and round to nearest even, so a row's quantized form
//     depends only on that row (batch invariance).
//   * Float weights (F32, F16, BF16) are dotted against the f32 row directly.
#ifndef TANDEM_TK_H
#define TANDEM_TK_H

// Keep the compiler from fusing a*b+c into an FMA differently in differently
// unrolled copies of a kernel, which would break batch invariance. (cgo does
// not accept -ffp-contract=off on the command line.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <stddef.h>
#include <stdint.h>

enum {
	TK_F32 = 0,
	TK_F16 = 1,
	TK_Q4_0 = 2,
	TK_Q4_1 = 3,
	TK_Q5_0 = 6,
	TK_Q5_1 = 7,
	TK_Q8_0 = 8,
	TK_Q4_K = 12,
	TK_Q5_K = 13,
	TK_Q6_K = 14,
	TK_BF16 = 30,
};

// tk_q8a is one 32-value activation block. s = d*sum(qs) lets the kernels fold
// weight offsets (Q4_1/Q5_1 mins) and unsigned-nibble biases into one scalar.
typedef struct {
	float d;
	float s;
	int8_t qs[32];
} tk_q8a;

// tk_q8k is one 256-value activation block; bsums are sums of 16-value groups,
// used by the K-quant mins.
typedef struct {
	float d;
	int16_t bsums[16];
	int8_t qs[256];
} tk_q8k;

// tk_tile computes out[j*ldo + i] = dot(weight row i, activation row j) for
// i < mr, j < nr. nb is the number of weight blocks per row; w points at row 0
// with rows wstride bytes apart; a points at activation row 0 with rows
// astride bytes apart. Every (i, j) pair must be computed with the same
// sequence of floating-point operations whatever mr and nr are: that is what
// makes MatMul batch-invariant.
typedef void (*tk_tile_fn)(int nb, const uint8_t *w, size_t wstride, int mr,
                           const uint8_t *a, size_t astride, int nr, float *out,
                           size_t ldo);

// tk_kernels is the set of kernels of one instruction-set level.
typedef struct {
	const char *name;
	int mr, nr;  // largest tile the kernels accept
	tk_tile_fn tile[31];  // indexed by weight type; NULL when unsupported
	// tile_mr/tile_nr[type] override mr/nr for tile[type] where nonzero.
	int tile_mr[31], tile_nr[31];
	// deq_tile[type] multiplies quantized weights with f32 activation rows,
	// dequantizing in registers with exactly the arithmetic of
	// tk_dequant_row followed by tile[TK_F32], so it gives the same bits as
	// that two-step path (kernels.ActF32) without the scratch round trip.
	// NULL where a level has none.
	tk_tile_fn deq_tile[31];
	// deq_row[type] decodes n values of one row like tk_dequant_row, with
	// the same bits, faster; NULL where a level has none.
	void (*deq_row[31])(const uint8_t *x, float *y, int n);
	// tile_hot is tile[TK_F32] for weight rows already in cache (a
	// dequantized scratch tile): the same arithmetic without the prefetches
	// that streaming weights need. NULL: use tile[TK_F32].
	tk_tile_fn tile_hot;
	// quant_q8a is tk_quantize_q8a with the same bits, faster; NULL: use
	// tk_quantize_q8a.
	void (*quant_q8a)(const float *x, tk_q8a *y, int n);
	// Attention helpers. K and V blocks are widened to f32 once per work
	// item and shared by all of its query rows and heads.
	void (*cvt_f16)(float *dst, const uint16_t *src, int n);
	void (*cvt_i8)(float *dst, const int8_t *src, float scale, int n);
	// scores sets s[j] = scale * dot(q, K[j*hd:]) for j < n.
	void (*scores)(float *s, const float *q, const float *K, int n, int hd, float scale);
	// exp_sum sets s[j] = exp(s[j] - m) and returns their sum.
	float (*exp_sum)(float *s, int n, float m);
	// wsum adds sum_j p[j] * V[j*hd:] to acc (hd values).
	void (*wsum)(float *acc, const float *p, const float *V, int n, int hd);
	void (*scale)(float *acc, float alpha, int n);
	// silu_mul sets dst[i] = g[i] / (1 + exp(-g[i])) * u[i].
	void (*silu_mul)(float *dst, const float *g, const float *u, int n);
} tk_kernels;

// Kernel tables; tk_kernels_avx2/avx512 return NULL when not compiled in.
void tk_kernels_generic(tk_kernels *k);
int tk_kernels_avx2(tk_kernels *k);
int tk_kernels_avx512(tk_kernels *k);
// tk_select fills k with the fastest level this CPU runs; level is 0
// (portable), 1 (AVX2+FMA+F16C) or 2 (AVX-512 VNNI); max_level caps it.
int tk_select(tk_kernels *k, int max_level);

// Half floats.
float tk_f16_to_f32(uint16_t h);
uint16_t tk_f32_to_f16(float f);

// Activation quantization of one row of n values (n a multiple of the block).
void tk_quantize_q8a(const float *x, tk_q8a *y, int n);
void tk_quantize_q8k(const float *x, tk_q8k *y, int n);
// tk_act_bytes is the size of one quantized activation row for weight type t,
// 0 for float types (which use the f32 row).
size_t tk_act_bytes(int t, int n);

// tk_dequant_row decodes n values of type t into y; returns 0 or -1 for an
// unsupported type.
int tk_dequant_row(int t, const uint8_t *x, float *y, int n);
// tk_row_bytes is the encoded size of n values of type t.
size_t tk_row_bytes(int t, int n);

// Worker pool. A task is split into nchunks independent chunks that threads
// claim one at a time, so a thread the OS has descheduled holds up at most
// the chunk it is in, never a fixed share of the work. tid (0 = the caller,
// < tk_pool_threads) identifies the running thread for per-thread scratch.
typedef struct tk_pool tk_pool;
typedef void (*tk_task_fn)(void *arg, int chunk, int nchunks, int tid);
tk_pool *tk_pool_new(int nthreads);
int tk_pool_threads(const tk_pool *p);
// tk_pool_run runs fn on every chunk in [0, nchunks) and returns when all
// have finished. nchunks must be below 2^20.
void tk_pool_run(tk_pool *p, tk_task_fn fn, void *arg, int nchunks);
void tk_pool_free(tk_pool *p);

#endif
