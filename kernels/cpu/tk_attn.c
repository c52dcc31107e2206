// Paged causal grouped-query attention with an online softmax.
//
// Work items are (sequence, query head, chunk of QCHUNK query rows); threads
// take them from a shared counter so long prompts and many short decode rows
// balance alike. For each query row the keys are visited block by block in
// table order: a block's scores go to a per-thread scratch row of BlockSize
// floats, then the running max, denominator and value accumulator are
// rescaled once per block. The order depends only on the row's own position
// and the block size, so results are batch-invariant.
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
	float *scratch;           // per thread: block_size + headdim floats
} attn_args;

static void attn_row(const attn_args *A, const float *q, float *out, int kvh, int nkeys,
                     const int32_t *blocks, float *sc, float *acc) {
	const tk_kernels *k = A->k;
	const int hd = A->headdim, bs = A->block_size;
	const size_t koff = A->dtype == 0 ? (size_t)kvh * hd * 2 : (size_t)kvh * hd;
	const size_t soff = (size_t)A->kvheads * hd + (size_t)kvh * 4;  // int8 scale
	float m = -INFINITY, l = 0;
	memset(acc, 0, (size_t)hd * sizeof(float));
	for (int b = 0; b * bs < nkeys; b++) {
		const uint8_t *base = A->region + (size_t)blocks[b] * A->block_bytes;
		const uint8_t *vbase = base + (size_t)bs * A->row_bytes;
		int n = nkeys - b * bs < bs ? nkeys - b * bs : bs;
		float bmax = -INFINITY;
		for (int s = 0; s < n; s++) {
			const uint8_t *row = base + (size_t)s * A->row_bytes;
			float d;
			if (A->dtype == 0) {
				d = k->dot_f16(q, (const uint16_t *)(row + koff), hd);
			} else {
				float ks;
				memcpy(&ks, row + soff, 4);
				d = k->dot_i8(q, (const int8_t *)(row + koff), hd) * ks;
			}
			sc[s] = d * A->scale;
			bmax = sc[s] > bmax ? sc[s] : bmax;
		}
		float mnew = bmax > m ? bmax : m;
		if (m != -INFINITY && mnew != m) {
			float alpha = expf(m - mnew);
			k->scale(acc, alpha, hd);
			l *= alpha;
		}
		m = mnew;
		for (int s = 0; s < n; s++) {
			float p = expf(sc[s] - m);
			l += p;
			const uint8_t *row = vbase + (size_t)s * A->row_bytes;
			if (A->dtype == 0) {
				k->axpy_f16(acc, p, (const uint16_t *)(row + koff), hd);
			} else {
				float vs;
				memcpy(&vs, row + soff, 4);
				k->axpy_i8(acc, p * vs, (const int8_t *)(row + koff), hd);
			}
		}
	}
	float inv = l > 0 ? 1.0f / l : 0.0f;
	for (int i = 0; i < hd; i++) out[i] = acc[i] * inv;
}

static void attn_task(void *v, int it, int nchunks, int tid) {
	(void)nchunks;
	attn_args *A = v;
	float *sc = A->scratch + (size_t)tid * (A->block_size + A->headdim);
	float *acc = sc + A->block_size;
	const int group = A->heads / A->kvheads;
	const int qcols = A->heads * A->headdim;
	// Binary search for the sequence that owns item it.
	int lo = 0, hi = A->nseq - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		if (A->item_off[mid] <= it) {
			lo = mid;
		} else {
			hi = mid - 1;
		}
	}
	int s = lo;
	{
		const int32_t *sq = A->seqs + 4 * s;
		int local = it - A->item_off[s];
		int chunks = (sq[1] + QCHUNK - 1) / QCHUNK;
		int h = local / chunks, c = local % chunks;
		int i1 = (c + 1) * QCHUNK < sq[1] ? (c + 1) * QCHUNK : sq[1];
		for (int i = c * QCHUNK; i < i1; i++) {
			size_t row = (size_t)(sq[0] + i);
			int nkeys = sq[2] - sq[1] + i + 1;
			attn_row(A, A->q + row * qcols + (size_t)h * A->headdim,
			         A->dst + row * qcols + (size_t)h * A->headdim, h / group, nkeys,
			         A->blocks + sq[3], sc, acc);
		}
	}
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
	};
	A.row_bytes = dtype == 0 ? (size_t)kvheads * headdim * 2 : (size_t)kvheads * (headdim + 4);
	A.block_bytes = 2 * (size_t)block_size * A.row_bytes;
	item_off[0] = 0;
	for (int s = 0; s < nseq; s++) {
		int chunks = (seqs[4 * s + 1] + QCHUNK - 1) / QCHUNK;
		item_off[s + 1] = item_off[s] + heads * chunks;
	}
	tk_pool_run(p, attn_task, &A, item_off[nseq]);
}
