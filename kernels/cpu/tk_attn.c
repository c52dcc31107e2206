// Paged causal grouped-query attention with an online softmax.
//
// A work item is (sequence, KV head, chunk of QCHUNK query rows): every query
// head of the KV head's group and every query row of the chunk share one
// widening of each K/V block to f32, which is where an f16 or int8 cache
// spends its time. Threads claim items dynamically (see tk_pool.c).
//
// Per (query row, head) the keys are visited block by block in table order:
// the block's scores go to a scratch row, then the running max, denominator
// and value accumulator are rescaled once per block. Which blocks a row
// visits and in what order depends only on the row's own position and the
// block size, so results are batch-invariant.
#include <math.h>
#include <string.h>

#include "tk.h"

enum { QCHUNK = 16 };

typedef struct {
	const tk_kernels *k;
	float *dst;
	const float *q;
	const uint8_t *region;
	size_t block_bytes, row_bytes;
	int block_size, kvheads, headdim, dtype, heads;
	float scale;
	int nseq;
	const int32_t *seqs;  // 4 per sequence: qstart, qlen, kvlen, offset into blocks
	const int32_t *blocks;
	const int32_t *item_off;  // nseq+1 prefix sums of work items
	float *scratch;
	size_t scratch_per_thread;
} attn_args;

// tk_attn_scratch is the per-thread scratch, in floats, that tk_attention needs.
size_t tk_attn_scratch(int block_size, int headdim, int heads, int kvheads) {
	size_t group = (size_t)(heads / kvheads);
	return 2 * (size_t)block_size * headdim + block_size + QCHUNK * group * ((size_t)headdim + 2);
}

// widen converts the rows of kv head kvh of one K or V block to f32. next,
// when not NULL, is the same K or V half of the sequence's next block: its
// rows are prefetched one per row converted, because blocks are scattered
// through the cache where the hardware prefetcher cannot follow.
static void widen(const attn_args *A, const uint8_t *base, const uint8_t *next, int n, int kvh, float *out) {
	const int hd = A->headdim;
	const size_t off = A->dtype == 0 ? (size_t)kvh * hd * 2 : (size_t)kvh * hd;
	for (int s = 0; s < n; s++) {
		const uint8_t *row = base + (size_t)s * A->row_bytes;
		if (next) {
			const uint8_t *pf = next + (size_t)s * A->row_bytes + off;
			__builtin_prefetch(pf);
			__builtin_prefetch(pf + 64);
		}
		if (A->dtype == 0) {
			A->k->cvt_f16(out + (size_t)s * hd, (const uint16_t *)(row + (size_t)kvh * hd * 2), hd);
		} else {
			float sc;
			memcpy(&sc, row + (size_t)A->kvheads * hd + (size_t)kvh * 4, 4);
			A->k->cvt_i8(out + (size_t)s * hd, (const int8_t *)(row + (size_t)kvh * hd), sc, hd);
		}
	}
}

static void attn_item(const attn_args *A, int s, int kvh, int c, float *scr) {
	const tk_kernels *k = A->k;
	const int32_t *sq = A->seqs + 4 * s;
	const int qstart = sq[0], qlen = sq[1], kvlen = sq[2];
	const int32_t *blocks = A->blocks + sq[3];
	const int hd = A->headdim, bs = A->block_size;
	const int group = A->heads / A->kvheads, qcols = A->heads * hd;
	const int i0 = c * QCHUNK, i1 = (c + 1) * QCHUNK < qlen ? (c + 1) * QCHUNK : qlen;
	const int nq = (i1 - i0) * group;  // (row, head) pairs of this item
	float *Kf = scr, *Vf = Kf + (size_t)bs * hd, *sc = Vf + (size_t)bs * hd;
	float *acc = sc + bs, *ml = acc + (size_t)QCHUNK * group * hd;  // ml: max, sum per pair
	memset(acc, 0, (size_t)nq * hd * sizeof(float));
	for (int p = 0; p < nq; p++) {
		ml[2 * p] = -INFINITY;
		ml[2 * p + 1] = 0;
	}
	// The last row of the chunk sees the most keys.
	const int maxkeys = kvlen - qlen + i1;
	for (int b = 0; b * bs < maxkeys; b++) {
		const uint8_t *base = A->region + (size_t)blocks[b] * A->block_bytes;
		int nb = maxkeys - b * bs < bs ? maxkeys - b * bs : bs;
		const uint8_t *next = (b + 1) * bs < maxkeys ? A->region + (size_t)blocks[b + 1] * A->block_bytes : NULL;
		widen(A, base, next, nb, kvh, Kf);
		widen(A, base + (size_t)bs * A->row_bytes, next ? next + (size_t)bs * A->row_bytes : NULL, nb, kvh, Vf);
		for (int i = i0; i < i1; i++) {
			const int nkeys = kvlen - qlen + i + 1;
			if (nkeys <= b * bs) {
				continue;
			}
			const int n = nkeys - b * bs < bs ? nkeys - b * bs : bs;
			for (int g = 0; g < group; g++) {
				const int h = kvh * group + g, p = (i - i0) * group + g;
				const float *q = A->q + (size_t)(qstart + i) * qcols + (size_t)h * hd;
				float *a = acc + (size_t)p * hd;
				k->scores(sc, q, Kf, n, hd, A->scale);
				float bmax = sc[0];
				for (int j = 1; j < n; j++) bmax = sc[j] > bmax ? sc[j] : bmax;
				float m = ml[2 * p], mnew = bmax > m ? bmax : m;
				if (m != -INFINITY && mnew != m) {
					float alpha = expf(m - mnew);
					k->scale(a, alpha, hd);
					ml[2 * p + 1] *= alpha;
				}
				ml[2 * p] = mnew;
				ml[2 * p + 1] += k->exp_sum(sc, n, mnew);
				k->wsum(a, sc, Vf, n, hd);
			}
		}
	}
	for (int i = i0; i < i1; i++) {
		for (int g = 0; g < group; g++) {
			const int h = kvh * group + g, p = (i - i0) * group + g;
			float l = ml[2 * p + 1], inv = l > 0 ? 1.0f / l : 0.0f;
			float *out = A->dst + (size_t)(qstart + i) * qcols + (size_t)h * hd;
			for (int e = 0; e < hd; e++) out[e] = acc[(size_t)p * hd + e] * inv;
		}
	}
}

static void attn_task(void *v, int it, int nchunks, int tid) {
	(void)nchunks;
	const attn_args *A = v;
	// The sequence owning item it: the last s with item_off[s] <= it.
	int lo = 0, hi = A->nseq - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if (A->item_off[mid] <= it) {
			lo = mid;
		} else {
			hi = mid - 1;
		}
	}
	int local = it - A->item_off[lo];
	int chunks = (A->seqs[4 * lo + 1] + QCHUNK - 1) / QCHUNK;
	attn_item(A, lo, local / chunks, local % chunks, A->scratch + (size_t)tid * A->scratch_per_thread);
}

void tk_attention(tk_pool *p, const tk_kernels *k, float *dst, const float *q,
                  const uint8_t *region, int block_size, int kvheads, int headdim, int dtype,
                  int heads, float scale, int nseq, const int32_t *seqs, const int32_t *blocks,
                  int32_t *item_off, float *scratch) {
	attn_args A = {
	    .k = k,
	    .dst = dst,
	    .q = q,
	    .region = region,
	    .block_size = block_size,
	    .kvheads = kvheads,
	    .headdim = headdim,
	    .dtype = dtype,
	    .heads = heads,
	    .scale = scale,
	    .nseq = nseq,
	    .seqs = seqs,
	    .blocks = blocks,
	    .item_off = item_off,
	    .scratch = scratch,
	    .scratch_per_thread = tk_attn_scratch(block_size, headdim, heads, kvheads),
	};
	A.row_bytes = dtype == 0 ? (size_t)kvheads * headdim * 2 : (size_t)kvheads * (headdim + 4);
	A.block_bytes = 2 * (size_t)block_size * A.row_bytes;
	item_off[0] = 0;
	for (int s = 0; s < nseq; s++) {
		int chunks = (seqs[4 * s + 1] + QCHUNK - 1) / QCHUNK;
		item_off[s + 1] = item_off[s] + kvheads * chunks;
	}
	tk_pool_run(p, attn_task, &A, item_off[nseq]);
}
