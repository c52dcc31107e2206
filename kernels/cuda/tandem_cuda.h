/*
 * tandem_cuda.h: the C ABI of libtandem_cuda.so (sources in csrc/).
 *
 * It sits in the Go package's folder rather than csrc/ because the Go build
 * cache only tracks headers there: a change to this ABI must rebuild the Go
 * side.
 *
 * The Go package kernels/cuda dlopens the library and resolves every function
 * below with dlsym, so the Go binary has no link-time dependency on CUDA. All
 * pointers named d_* are device pointers; h_* are host pointers that are only
 * read during the call (the library copies what it needs before returning).
 *
 * Every function returns 0 on success or an error code: a positive value is a
 * cudaError_t, TC_ERR_* values are the library's own, and values at or below
 * TC_ERR_NCCL_BASE carry an ncclResult_t. tandem_cuda_strerror describes any
 * code. Kernels are launched asynchronously on the context's stream; errors
 * raised by a running kernel surface at the next synchronising call.
 *
 * Concurrency: a context is used by one thread at a time. Every entry point
 * makes the context's device current first, so callers may move between OS
 * threads (Go goroutines do) between calls.
 */
#ifndef TANDEM_CUDA_H
#define TANDEM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TANDEM_CUDA_ABI_VERSION 6

#define TC_OK 0
#define TC_ERR_ARG (-1)         /* invalid argument */
#define TC_ERR_UNSUPPORTED (-2) /* format or shape the kernels do not handle */
#define TC_ERR_NO_NCCL (-3)     /* libnccl.so.2 could not be loaded */
#define TC_ERR_NCCL_BASE (-1000) /* TC_ERR_NCCL_BASE - ncclResult_t */

/* Weight formats: the ggml type numbers (kernels/quant.Type). */
#define TC_F32 0
#define TC_F16 1
#define TC_Q4_0 2
#define TC_Q4_1 3
#define TC_Q5_0 6
#define TC_Q5_1 7
#define TC_Q8_0 8
#define TC_Q4_K 12
#define TC_Q5_K 13
#define TC_Q6_K 14
#define TC_BF16 30

typedef struct tc_ctx tc_ctx;

typedef struct {
	char name[256];
	uint64_t total_memory;
	int cc_major;
	int cc_minor;
	int multiprocessors;
	int memory_bus_bits;
	int memory_clock_khz; /* 0 when the runtime does not report it */
	int driver_version;   /* e.g. 12080 for 12.8 */
	int runtime_version;
} tc_device_info;

int tandem_cuda_abi_version(void);
void tandem_cuda_strerror(int code, char *buf, size_t n);
int tandem_cuda_device_count(int *n);
int tandem_cuda_device_info(int device, tc_device_info *out);

int tandem_cuda_create(int device, tc_ctx **out);
int tandem_cuda_destroy(tc_ctx *c);
int tandem_cuda_sync(tc_ctx *c);

/* Memory. tandem_cuda_malloc returns zeroed memory. Copies are synchronous
 * with respect to the host buffer: it may be reused when the call returns. */
int tandem_cuda_malloc(tc_ctx *c, size_t bytes, void **d_out);
int tandem_cuda_free(tc_ctx *c, void *d);
int tandem_cuda_upload(tc_ctx *c, void *d_dst, const void *h_src, size_t bytes);
int tandem_cuda_download(tc_ctx *c, void *h_dst, const void *d_src, size_t bytes);
int tandem_cuda_memset(tc_ctx *c, void *d, size_t bytes);

/*
 * Weights. tandem_cuda_weight_bytes gives the device size of a rows x cols
 * weight of type; tandem_cuda_weight_load converts the ggml encoding in h_src
 * (rows * row bytes) into that layout: quantized blocks are split into an
 * array of 16-byte aligned quant payloads followed by an array of scales so
 * that kernels read weights with 128-bit loads. Q4_0, Q4_1, Q5_0, Q5_1 and
 * Q8_0 need cols % 32 == 0; the K-quants Q4_K, Q5_K and Q6_K need cols % 256 == 0.
 */
int tandem_cuda_weight_bytes(int type, int rows, int cols, size_t *out);
int tandem_cuda_weight_load(tc_ctx *c, void *d_w, int type, int rows, int cols,
                            const void *h_src, size_t src_bytes);

/* dst[t, :] = dequantized row ids[t] of table. */
int tandem_cuda_embed(tc_ctx *c, float *d_dst, const void *d_table, int type,
                      int rows, int cols, const int32_t *h_ids, int n);
/* dst = x / sqrt(mean(x^2) + eps) * w per row; w is rows=1 F32. */
int tandem_cuda_rmsnorm(tc_ctx *c, float *d_dst, const float *d_x,
                        const float *d_w, int rows, int cols, float eps);
/* dst[T, rows] = x[T, cols] . w^T. Quantized weights multiply activations
 * quantized on the device: to Q8_1 for the 32-value formats, to Q8_K for the
 * K-quants (kernels/quant.ActivationType), each row exactly as the reference
 * quantizes it. */
int tandem_cuda_matmul(tc_ctx *c, float *d_dst, const float *d_x, int t,
                       const void *d_w, int type, int rows, int cols);
int tandem_cuda_rope(tc_ctx *c, float *d_x, int t, const int32_t *h_pos,
                     int heads, int head_dim, int dims, float base,
                     float freq_scale, int interleaved);
int tandem_cuda_add(tc_ctx *c, float *d_dst, const float *d_x, size_t n);
int tandem_cuda_swiglu(tc_ctx *c, float *d_dst, const float *d_gate,
                       const float *d_up, size_t n);
int tandem_cuda_gather(tc_ctx *c, float *d_dst, const float *d_src, int cols,
                       const int32_t *h_rows, int n);

/*
 * KV cache. d_layer is one layer's region; block b starts at b * block_bytes
 * and holds block_size key rows then block_size value rows. kv_dtype selects
 * the row format (kernels.KVDType):
 *   TC_KV_F16:  kv_heads * head_dim halves.
 *   TC_KV_INT8: kv_heads int8 vectors of head_dim (round(x / scale)), then
 *               kv_heads float32 scales (max|x| / 127).
 */
#define TC_KV_F16 0
#define TC_KV_INT8 1
int tandem_cuda_store_kv(tc_ctx *c, void *d_layer, int kv_dtype, int block_size,
                         int kv_heads, int head_dim, const float *d_k,
                         const float *d_v, const int32_t *h_slots, int n);

/*
 * Attention work list. Work is split into tasks of one query row, one query
 * head and one key range [k_begin, k_end) (keys beyond the query's position
 * are never listed). TC_ATTN_WARPS consecutive tasks form one thread block and
 * must share a sequence (block table), a KV head and k_begin. Unused task
 * slots have q_row = -1. table_off indexes h_tables, where the sequence's
 * block table starts.
 *
 * A task with part < 0 writes its query's output. A task with part >= 0
 * writes a partial result (running max, normaliser, unnormalised output) to
 * partial slot part; each h_combine entry then folds n_parts consecutive
 * partials, in order, into the output of (q_row, head).
 *
 * The work list is copied into a device buffer the context keeps for it.
 * With staged != 0 the caller asserts that the arrays are the ones of its
 * previous call (a model runs every layer with the same work list) and the
 * copy is skipped.
 */
#define TC_ATTN_WARPS 4
typedef struct {
	int32_t q_row;
	int32_t head;
	int32_t k_end;
	int32_t table_off;
	int32_t k_begin;
	int32_t part;
	int32_t reserved[2];
} tc_attn_task;

typedef struct {
	int32_t q_row;
	int32_t head;
	int32_t first_part;
	int32_t n_parts;
} tc_attn_combine;

int tandem_cuda_attention(tc_ctx *c, float *d_dst, const float *d_q,
                          const void *d_layer, int kv_dtype, int block_size, int heads,
                          int kv_heads, int head_dim, float scale,
                          const tc_attn_task *h_tasks, int n_tasks,
                          const int32_t *h_tables, int n_tables,
                          const tc_attn_combine *h_combine, int n_combine,
                          int n_parts, int staged);

/*
 * NCCL, loaded with dlopen("libnccl.so.2") on first use. A communicator
 * handle is opaque. tandem_nccl_init_all creates one communicator per listed
 * context (one process driving several GPUs, ncclCommInitAll); the all-reduce
 * is enqueued on the context's stream and returns without waiting.
 */
int tandem_nccl_available(void);
int tandem_nccl_init_all(tc_ctx **ctxs, int n, void **comms_out);
int tandem_nccl_all_reduce_sum(tc_ctx *c, void *comm, float *d_buf, size_t n);
int tandem_nccl_destroy(void *comm);

#ifdef __cplusplus
}
#endif
#endif
