// MatMul with full-precision activations: each thread dequantizes a tile of
// weight rows to f32 once and runs the f32 tile kernel over every activation
// row. Activations are never rounded, so results track an f32 reference
// (the weights dequantized, as Hugging Face transformers runs GGUF files)
// instead of llama.cpp's 8-bit activation rounding, at the cost of more
// arithmetic per weight than the integer dot products.
#include "tk.h"
#include "tk_ops.h"

typedef struct {
	tk_tile_fn fn;
	void (*deq_row)(const uint8_t *x, float *y, int n);  // NULL: tk_dequant_row
	int mr, nr;
	int type;
	const uint8_t *w;
	size_t ws;
	int rows, cols;
	const float *x;
	int T;
	float *out;
	float *deq;  // per thread: mr rows of cols floats
} mf_args;

static void mf_task(void *v, int chunk, int nchunks, int tid) {
	mf_args *m = v;
	const int mr = m->mr, nr = m->nr;
	float *deq = m->deq + (size_t)tid * (size_t)mr * (size_t)m->cols;
	const size_t xs = (size_t)m->cols * sizeof(float);
	int tiles = (m->rows + mr - 1) / mr;
	int t0t = (int)((int64_t)tiles * chunk / nchunks);
	int t1t = (int)((int64_t)tiles * (chunk + 1) / nchunks);
	int r0 = t0t * mr;
	int r1 = t1t * mr < m->rows ? t1t * mr : m->rows;
	for (int r = r0; r < r1; r += mr) {
		int nrows = r1 - r < mr ? r1 - r : mr;
		for (int i = 0; i < nrows; i++) {
			const uint8_t *wr = m->w + (size_t)(r + i) * m->ws;
			if (m->deq_row) {
				m->deq_row(wr, deq + (size_t)i * m->cols, m->cols);
			} else {
				tk_dequant_row(m->type, wr, deq + (size_t)i * m->cols, m->cols);
			}
		}
		for (int t = 0; t < m->T; t += nr) {
			int nt = m->T - t < nr ? m->T - t : nr;
			m->fn(m->cols, (const uint8_t *)deq, xs, nrows, (const uint8_t *)(m->x + (size_t)t * m->cols), xs,
			      nt, m->out + (size_t)t * m->rows + r, (size_t)m->rows);
		}
	}
}

size_t tk_matmul_f32act_scratch(const tk_pool *p, const tk_kernels *k, int cols) {
	return (size_t)tk_pool_threads(p) * (size_t)k->mr * (size_t)cols * sizeof(float);
}

// tk_matmul_f32act sets out[T, rows] = x[T, cols] . dequant(w)^T. deq holds
// tk_matmul_f32act_scratch bytes. Returns -1 for an unsupported type.
int tk_matmul_f32act(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows, int cols,
                     const float *x, int T, float *out, float *deq) {
	if (type < 0 || type > 30 || !k->tile[TK_F32] || tk_row_bytes(type, cols) == 0) {
		return -1;
	}
	if (tk_matmul_deq_ok(k, type, T)) {  // same bits, no scratch round trip
		tk_matmul_deq(p, k, type, w, rows, cols, x, T, out);
		return 0;
	}
	mf_args m = {
	    .fn = k->tile_hot ? k->tile_hot : k->tile[TK_F32],
	    .deq_row = k->deq_row[type],
	    .mr = k->mr,
	    .nr = k->nr,
	    .type = type,
	    .w = w,
	    .ws = tk_row_bytes(type, cols),
	    .rows = rows,
	    .cols = cols,
	    .x = x,
	    .T = T,
	    .out = out,
	    .deq = deq,
	};
	// A chunk should cover at least ~16 KiB of weights so claiming stays cheap.
	int tiles = (rows + k->mr - 1) / k->mr;
	size_t tile_bytes = m.ws * (size_t)k->mr;
	int min_tiles = (int)((16384 + tile_bytes - 1) / tile_bytes);
	int chunks = tiles / (min_tiles > 0 ? min_tiles : 1);
	int cap = 4 * tk_pool_threads(p);
	chunks = chunks < cap ? chunks : cap;
	tk_pool_run(p, mf_task, &m, chunks < 1 ? 1 : chunks);
	return 0;
}
