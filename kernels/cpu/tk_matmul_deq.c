// Full-precision-activation MatMul for small batches: weights are
// dequantized in registers by the level's deq_tile kernels (see tk.h), so a
// decode step streams the quantized bytes once and never writes an f32 copy.
// deq_tile reproduces the dequantize-then-f32-tile arithmetic exactly, which
// keeps a row's result the same whichever path its batch size selects.
#include "tk.h"
#include "tk_ops.h"

typedef struct {
	tk_tile_fn fn;
	int mr, nr;
	const uint8_t *w;
	size_t ws;
	int rows, nb;
	const uint8_t *x;
	size_t xs;
	int T;
	float *out;
} deq_args;

static void deq_task(void *v, int chunk, int nchunks, int tid) {
	(void)tid;
	const deq_args *m = v;
	int tiles = (m->rows + m->mr - 1) / m->mr;
	int r0 = (int)((int64_t)tiles * chunk / nchunks) * m->mr;
	int r1 = (int)((int64_t)tiles * (chunk + 1) / nchunks) * m->mr;
	r1 = r1 < m->rows ? r1 : m->rows;
	for (int r = r0; r < r1; r += m->mr) {
		int nrows = r1 - r < m->mr ? r1 - r : m->mr;
		for (int t = 0; t < m->T; t += m->nr) {
			int nt = m->T - t < m->nr ? m->T - t : m->nr;
			m->fn(m->nb, m->w + (size_t)r * m->ws, m->ws, nrows, m->x + (size_t)t * m->xs, m->xs, nt,
			      m->out + (size_t)t * m->rows + r, (size_t)m->rows);
		}
	}
}

int tk_matmul_deq_ok(const tk_kernels *k, int type, int T) {
	// Past two activation tiles, dequantizing each weight tile once into
	// scratch (tk_matmul_f32.c) costs less than redoing it per tile.
	return type >= 0 && type <= 30 && k->deq_tile[type] != NULL && T <= 2 * k->nr;
}

void tk_matmul_deq(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows, int cols,
                   const float *x, int T, float *out) {
	deq_args m = {
	    .fn = k->deq_tile[type],
	    .mr = k->mr,
	    .nr = k->nr,
	    .w = w,
	    .ws = tk_row_bytes(type, cols),
	    .rows = rows,
	    .nb = cols / 32,
	    .x = (const uint8_t *)x,
	    .xs = (size_t)cols * sizeof(float),
	    .T = T,
	    .out = out,
	};
	int tiles = (rows + k->mr - 1) / k->mr;
	size_t tile_bytes = m.ws * (size_t)k->mr;
	int min_tiles = (int)((16384 + tile_bytes - 1) / tile_bytes);
	int chunks = tiles / (min_tiles > 0 ? min_tiles : 1);
	int cap = 4 * tk_pool_threads(p);
	chunks = chunks < cap ? chunks : cap;
	tk_pool_run(p, deq_task, &m, chunks < 1 ? 1 : chunks);
}
