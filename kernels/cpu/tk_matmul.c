// MatMul driver: quantize the activation rows once, then sweep tiles of
// weight rows x activation rows over the pool.
#include <string.h>

#include "tk.h"

// Activation rows are swept in panels of TB rows so a panel's quantized rows
// stay in L2 while every weight tile of a thread's slice passes over them.
enum { TB = 64 };

typedef struct {
	const tk_kernels *k;
	tk_tile_fn fn;
	int mr, nr;  // the tile shape of fn
	int type;
	const uint8_t *w;
	size_t ws;
	int rows, cols, nb;
	const float *x;
	int T;
	uint8_t *a;  // quantized rows, or x itself for float weights
	size_t as;
	float *out;
} mm_args;

static void quant_task(void *v, int chunk, int nchunks, int tid) {
	(void)tid;
	mm_args *m = v;
	for (int t = chunk; t < m->T; t += nchunks) {
		const float *x = m->x + (size_t)t * m->cols;
		uint8_t *y = m->a + (size_t)t * m->as;
		if (m->type == TK_Q4_K || m->type == TK_Q5_K || m->type == TK_Q6_K) {
			tk_quantize_q8k(x, (tk_q8k *)y, m->cols);
		} else if (m->k->quant_q8a) {
			m->k->quant_q8a(x, (tk_q8a *)y, m->cols);
		} else {
			tk_quantize_q8a(x, (tk_q8a *)y, m->cols);
		}
	}
}

// mm_task computes one chunk: a contiguous slice of whole row tiles, for
// every activation row.
static void mm_task(void *v, int chunk, int nchunks, int tid) {
	(void)tid;
	mm_args *m = v;
	const int mr = m->mr, nr = m->nr;
	int tiles = (m->rows + mr - 1) / mr;
	int t0t = (int)((int64_t)tiles * chunk / nchunks);
	int t1t = (int)((int64_t)tiles * (chunk + 1) / nchunks);
	int r0 = t0t * mr;
	int r1 = t1t * mr < m->rows ? t1t * mr : m->rows;
	for (int t0 = 0; t0 < m->T; t0 += TB) {
		int t1 = t0 + TB < m->T ? t0 + TB : m->T;
		for (int r = r0; r < r1; r += mr) {
			int nr_rows = r1 - r < mr ? r1 - r : mr;
			const uint8_t *w = m->w + (size_t)r * m->ws;
			for (int t = t0; t < t1; t += nr) {
				int nt = t1 - t < nr ? t1 - t : nr;
				m->fn(m->nb, w, m->ws, nr_rows, m->a + (size_t)t * m->as, m->as, nt,
				      m->out + (size_t)t * m->rows + r, (size_t)m->rows);
			}
		}
	}
}

// chunks_for splits n units into chunks of at least min_units each, up to
// CHUNKS_PER_THREAD per thread: enough that a descheduled thread leaves
// little work stranded, few enough that claiming stays cheap.
static int chunks_for(const tk_pool *p, int n, int min_units) {
	enum { CHUNKS_PER_THREAD = 4 };
	int c = n / (min_units > 0 ? min_units : 1);
	int cap = CHUNKS_PER_THREAD * tk_pool_threads(p);
	c = c < cap ? c : cap;
	return c < 1 ? 1 : c;
}

// tk_matmul sets out[T, rows] = x[T, cols] . w^T. scratch holds at least
// T*tk_act_bytes(type, cols) bytes. Returns -1 for an unsupported type.
int tk_matmul(tk_pool *p, const tk_kernels *k, int type, const uint8_t *w, int rows,
              int cols, const float *x, int T, float *out, uint8_t *scratch) {
	if (type < 0 || type > 30 || !k->tile[type]) {
		return -1;
	}
	mm_args m = {
	    .k = k,
	    .fn = k->tile[type],
	    .mr = k->tile_mr[type] ? k->tile_mr[type] : k->mr,
	    .nr = k->tile_nr[type] ? k->tile_nr[type] : k->nr,
	    .type = type,
	    .w = w,
	    .ws = tk_row_bytes(type, cols),
	    .rows = rows,
	    .cols = cols,
	    .x = x,
	    .T = T,
	    .out = out,
	};
	size_t ab = tk_act_bytes(type, cols);
	if (ab == 0) {
		m.nb = cols;
		m.a = (uint8_t *)x;
		m.as = (size_t)cols * 4;
	} else {
		m.nb = cols / (type == TK_Q4_K || type == TK_Q5_K || type == TK_Q6_K ? 256 : 32);
		m.a = scratch;
		m.as = ab;
		// One row is cheaper to quantize here than to hand to the pool.
		if (T < 4) {
			quant_task(&m, 0, 1, 0);
		} else {
			tk_pool_run(p, quant_task, &m, chunks_for(p, T, 2));
		}
	}
	// A chunk should stream at least ~16 KiB of weights per activation row.
	int tiles = (rows + m.mr - 1) / m.mr;
	size_t tile_bytes = m.ws * (size_t)m.mr * (size_t)(T < 16 ? T : 16);
	int min_tiles = (int)((16384 + tile_bytes - 1) / tile_bytes);
	tk_pool_run(p, mm_task, &m, chunks_for(p, tiles, min_tiles));
	return 0;
}
