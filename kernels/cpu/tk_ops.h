// Entry points called from Go. Shapes are validated on the Go side before
// any of these run; they trust their arguments.
#ifndef TANDEM_TK_OPS_H
#define TANDEM_TK_OPS_H

#include "tk.h"

int tk_matmul(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows, int cols,
              const float *x, int T, float *out, uint8_t *scratch);
void tk_attention(tk_pool *p, const tk_kernels *k, float *dst, const float *q,
                  const uint8_t *region, int block_size, int kvheads, int headdim, int dtype,
                  int heads, float scale, int nseq, const int32_t *seqs, const int32_t *blocks,
                  int32_t *item_off, float *scratch);
// Small-batch full-precision-activation MatMul (tk_matmul_deq.c).
int tk_matmul_deq_ok(const tk_kernels *k, int type, int T);
void tk_matmul_deq(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows, int cols,
                   const float *x, int T, float *out);
size_t tk_attn_scratch(int block_size, int headdim, int heads, int kvheads);
void tk_rmsnorm(tk_pool *p, float *dst, const float *x, const float *w, int rows, int cols, float eps);
void tk_add(tk_pool *p, float *dst, const float *x, int rows, int cols);
void tk_swiglu(tk_pool *p, const tk_kernels *k, float *dst, const float *gate, const float *up, int rows, int cols);
void tk_rope(tk_pool *p, float *x, const int32_t *pos, int rows, int cols, int heads, int headdim,
             int dims, float base, float freq_scale, int interleaved);
void tk_embed(tk_pool *p, float *dst, int type, const uint8_t *table, int cols, const int32_t *ids,
              int rows);
void tk_store_kv(uint8_t *region, int block_size, int kvheads, int headdim, int dtype,
                 const float *k, const float *v, const int32_t *slots, int rows);
// Benchmark helpers (tk_bench.c).
uint64_t tk_stream_read(tk_pool *p, const uint8_t *buf, size_t n);
void tk_pool_nop(tk_pool *p);

#endif
