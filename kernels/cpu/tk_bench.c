// Measurement helpers for the benchmarks: a streaming read across the pool
// (the machine's practical memory bandwidth, which bounds batch-1 decode) and
// an empty task (the pool's dispatch overhead).
#include "tk.h"
#include "tk_ops.h"

typedef struct {
	const uint64_t *p;
	size_t n;  // words
	uint64_t sums[256];
} stream_args;

static void stream_task(void *v, int ith, int nth, int tid) {
	(void)tid;
	stream_args *a = v;
	size_t per = (a->n / (size_t)nth) & ~(size_t)7;
	size_t i0 = per * (size_t)ith, i1 = ith == nth - 1 ? a->n : i0 + per;
	// Eight independent integer sums: the compiler vectorises them freely
	// (integer addition reassociates), so the loop is load-bound.
	uint64_t s[8] = {0};
	size_t i = i0;
	for (; i + 8 <= i1; i += 8) {
		for (int k = 0; k < 8; k++) s[k] += a->p[i + k];
	}
	for (; i < i1; i++) s[0] += a->p[i];
	a->sums[ith] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

uint64_t tk_stream_read(tk_pool *p, const uint8_t *buf, size_t n) {
	stream_args a = {.p = (const uint64_t *)buf, .n = n / 8};
	int n_chunks = tk_pool_threads(p);
	tk_pool_run(p, stream_task, &a, n_chunks);
	uint64_t s = 0;
	for (int i = 0; i < n_chunks; i++) s += a.sums[i];
	return s;
}

static void nop_task(void *v, int chunk, int nchunks, int tid) {
	(void)v;
	(void)chunk;
	(void)nchunks;
	(void)tid;
}

void tk_pool_nop(tk_pool *p) { tk_pool_run(p, nop_task, NULL, tk_pool_threads(p)); }
