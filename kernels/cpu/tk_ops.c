// Row-wise operations: RMSNorm, Add, SwiGLU, RoPE, Embed and StoreKV. They
// are memory-light next to MatMul, so they stay plain C (auto-vectorised where
// the compiler can without reassociating reductions) and use the pool only
// when a batch has enough rows to pay for the dispatch.
#include <math.h>
#include <string.h>

#include "tk.h"
#include "tk_ops.h"

// Rows below which an op runs on the calling thread alone.
enum { PAR_ROWS = 8 };

typedef struct {
	int op;
	float *dst;
	const float *x, *y;
	const float *w;
	const tk_kernels *k;
	int rows, cols;
	float eps;
	// RoPE
	const int32_t *pos;
	int heads, headdim, dims, interleaved;
	float base, freq_scale;
	// Embed
	int type;
	const uint8_t *table;
	size_t table_row;
	const int32_t *ids;
} rows_args;

enum { OP_RMSNORM, OP_ADD, OP_SWIGLU, OP_ROPE, OP_EMBED };

static void rmsnorm_row(float *dst, const float *x, const float *w, int n, float eps) {
	float ss = 0;
	for (int i = 0; i < n; i++) ss += x[i] * x[i];
	float r = 1.0f / sqrtf(ss / (float)n + eps);
	for (int i = 0; i < n; i++) dst[i] = x[i] * r * w[i];
}

static void rope_row(float *x, int pos, const rows_args *a) {
	const int half = a->dims / 2;
	// ggml's recurrence in float32 (theta_i = pos*scale*base^(-2i/dims)),
	// so angles, and therefore outputs, agree with llama.cpp and kernels/ref.
	const float theta_scale = (float)pow((double)a->base, -2.0 / (double)a->dims);
	float theta = (float)pos * (a->freq_scale == 0 ? 1.0f : a->freq_scale);
	for (int i = 0; i < half; i++, theta *= theta_scale) {
		float c = (float)cos((double)theta), s = (float)sin((double)theta);
		for (int h = 0; h < a->heads; h++) {
			float *v = x + (size_t)h * a->headdim;
			int i0 = a->interleaved ? 2 * i : i;
			int i1 = a->interleaved ? 2 * i + 1 : i + half;
			float x0 = v[i0], x1 = v[i1];
			v[i0] = x0 * c - x1 * s;
			v[i1] = x0 * s + x1 * c;
		}
	}
}

static void rows_task(void *v, int chunk, int nchunks, int tid) {
	(void)tid;
	const rows_args *a = v;
	int r0 = (int)((int64_t)a->rows * chunk / nchunks);
	int r1 = (int)((int64_t)a->rows * (chunk + 1) / nchunks);
	for (int r = r0; r < r1; r++) {
		size_t o = (size_t)r * a->cols;
		switch (a->op) {
		case OP_RMSNORM:
			rmsnorm_row(a->dst + o, a->x + o, a->w, a->cols, a->eps);
			break;
		case OP_ADD:
			for (int i = 0; i < a->cols; i++) a->dst[o + i] += a->x[o + i];
			break;
		case OP_SWIGLU:
			a->k->silu_mul(a->dst + o, a->x + o, a->y + o, a->cols);
			break;
		case OP_ROPE:
			rope_row(a->dst + o, a->pos[r], a);
			break;
		case OP_EMBED:
			tk_dequant_row(a->type, a->table + (size_t)a->ids[r] * a->table_row, a->dst + o, a->cols);
			break;
		}
	}
}

static void run_rows(tk_pool *p, rows_args *a) {
	if (a->rows < PAR_ROWS) {
		rows_task(a, 0, 1, 0);
	} else {
		int c = 4 * tk_pool_threads(p);
		tk_pool_run(p, rows_task, a, c < a->rows ? c : a->rows);
	}
}

void tk_rmsnorm(tk_pool *p, float *dst, const float *x, const float *w, int rows, int cols, float eps) {
	rows_args a = {.op = OP_RMSNORM, .dst = dst, .x = x, .w = w, .rows = rows, .cols = cols, .eps = eps};
	run_rows(p, &a);
}

void tk_add(tk_pool *p, float *dst, const float *x, int rows, int cols) {
	rows_args a = {.op = OP_ADD, .dst = dst, .x = x, .rows = rows, .cols = cols};
	run_rows(p, &a);
}

void tk_swiglu(tk_pool *p, const tk_kernels *k, float *dst, const float *gate, const float *up, int rows, int cols) {
	rows_args a = {.op = OP_SWIGLU, .k = k, .dst = dst, .x = gate, .y = up, .rows = rows, .cols = cols};
	run_rows(p, &a);
}

void tk_rope(tk_pool *p, float *x, const int32_t *pos, int rows, int cols, int heads, int headdim,
             int dims, float base, float freq_scale, int interleaved) {
	rows_args a = {.op = OP_ROPE, .dst = x, .pos = pos, .rows = rows, .cols = cols, .heads = heads,
	               .headdim = headdim, .dims = dims, .base = base, .freq_scale = freq_scale,
	               .interleaved = interleaved};
	run_rows(p, &a);
}

void tk_embed(tk_pool *p, float *dst, int type, const uint8_t *table, int cols, const int32_t *ids,
              int rows) {
	rows_args a = {.op = OP_EMBED, .dst = dst, .type = type, .table = table,
	               .table_row = tk_row_bytes(type, cols), .ids = ids, .rows = rows, .cols = cols};
	run_rows(p, &a);
}

// tk_store_kv writes row i of k and v into slot slots[i] of a layer region.
void tk_store_kv(uint8_t *region, int block_size, int kvheads, int headdim, int dtype,
                 const float *k, const float *v, const int32_t *slots, int rows) {
	const int cols = kvheads * headdim;
	const size_t rb = dtype == 0 ? (size_t)cols * 2 : (size_t)kvheads * (headdim + 4);
	const size_t bb = 2 * (size_t)block_size * rb;
	for (int r = 0; r < rows; r++) {
		int blk = slots[r] / block_size, off = slots[r] % block_size;
		uint8_t *kdst = region + (size_t)blk * bb + (size_t)off * rb;
		uint8_t *vdst = kdst + (size_t)block_size * rb;
		for (int which = 0; which < 2; which++) {
			const float *src = (which == 0 ? k : v) + (size_t)r * cols;
			uint8_t *d = which == 0 ? kdst : vdst;
			if (dtype == 0) {
				for (int i = 0; i < cols; i++) {
					uint16_t h = tk_f32_to_f16(src[i]);
					memcpy(d + 2 * i, &h, 2);
				}
				continue;
			}
			for (int h = 0; h < kvheads; h++) {
				const float *x = src + (size_t)h * headdim;
				float amax = 0;
				for (int i = 0; i < headdim; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
				float sc = amax / 127.0f;
				float id = sc != 0 ? 1.0f / sc : 0.0f;
				int8_t *q = (int8_t *)d + (size_t)h * headdim;
				for (int i = 0; i < headdim; i++) {
					int qi = (int)nearbyintf(x[i] * id);
					q[i] = (int8_t)(qi > 127 ? 127 : (qi < -127 ? -127 : qi));
				}
				memcpy(d + (size_t)kvheads * headdim + (size_t)h * 4, &sc, 4);
			}
		}
	}
}
