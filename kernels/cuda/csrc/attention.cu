// attention.cu: causal grouped-query attention over the paged KV cache (f16
// or int8 rows), for prefill and decode alike.
//
// Flash-attention style: a thread block owns up to TC_ATTN_WARPS (query row,
// query head, key range) tasks that share one sequence, one KV head and the
// start of their key range. It walks the keys in tiles of 32, loading each
// tile once into shared memory through the block table, and every warp folds
// the tile into its own query's
// running maximum, normaliser and output (online softmax), so no score matrix
// is ever materialised. A warp visits keys in the same order whatever other
// tasks share its block, which keeps results batch-invariant. Decode steps
// over long contexts are also split by key range (see attentionTasks in
// attention.go); a second kernel folds the partial results in range order.
#include <math.h>

#include "common.cuh"

#define TC_ATTN_TILE 32
#define TC_ATTN_MAX_HD 256
#define TC_ATTN_PER_LANE (TC_ATTN_MAX_HD / 32)

// Shared memory: K tile as float with a padded row stride (head_dim+1, odd for
// even head_dim, so lane j reading row j hits distinct banks), V tile as float,
// and each warp's query vector.
static size_t tc_attn_smem(int head_dim) {
	return sizeof(float) * ((size_t)TC_ATTN_TILE * (head_dim + 1) + (size_t)TC_ATTN_TILE * head_dim +
	                        (size_t)TC_ATTN_WARPS * head_dim);
}

__global__ void __launch_bounds__(TC_ATTN_WARPS * 32)
    k_attention(float *dst, float *partials, const float *q, const uint8_t *layer, int kv_dtype, int block_size,
                int heads, int kv_heads, int head_dim, float scale, const tc_attn_task *tasks,
                const int32_t *tables) {
	extern __shared__ float smem[];
	__shared__ float ksc[TC_ATTN_TILE], vsc[TC_ATTN_TILE]; // int8 row scales of the tile
	const int kstride = head_dim + 1;
	float *ks = smem;
	float *vs = ks + TC_ATTN_TILE * kstride;
	float *qsm = vs + TC_ATTN_TILE * head_dim;

	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const tc_attn_task *blk = tasks + (size_t)blockIdx.x * TC_ATTN_WARPS;
	const tc_attn_task me = blk[warp];
	const bool active = me.q_row >= 0;

	// Every active task in the block shares the table, the KV head and the
	// start of the key range.
	int kvh = 0, table_off = 0, k_begin = 0, max_keys = 0;
	for (int w = 0; w < TC_ATTN_WARPS; w++) {
		if (blk[w].q_row < 0) continue;
		kvh = blk[w].head / (heads / kv_heads);
		table_off = blk[w].table_off;
		k_begin = blk[w].k_begin;
		max_keys = max(max_keys, blk[w].k_end);
	}
	const int32_t *table = tables + table_off;
	const size_t rb = tc_kv_row_bytes(kv_dtype, kv_heads, head_dim);
	const size_t block_bytes = 2 * (size_t)block_size * rb;

	float *myq = qsm + warp * head_dim;
	if (active) {
		const float *qrow = q + (size_t)me.q_row * heads * head_dim + (size_t)me.head * head_dim;
		for (int d = lane; d < head_dim; d += 32) myq[d] = qrow[d] * scale;
	}

	float m = -INFINITY, l = 0.f;
	float acc[TC_ATTN_PER_LANE];
#pragma unroll
	for (int k = 0; k < TC_ATTN_PER_LANE; k++) acc[k] = 0.f;

	for (int k0 = k_begin; k0 < max_keys; k0 += TC_ATTN_TILE) {
		__syncthreads(); // previous tile fully consumed (and myq written)
		const int n = min(TC_ATTN_TILE, max_keys - k0);
		if (kv_dtype == TC_KV_INT8) {
			if (threadIdx.x < n) {
				const int slot = k0 + threadIdx.x;
				const uint8_t *base = layer + (size_t)table[slot / block_size] * block_bytes;
				const uint8_t *kr = base + (size_t)(slot % block_size) * rb + (size_t)kv_heads * head_dim + 4 * (size_t)kvh;
				const uint8_t *vr = kr + (size_t)block_size * rb;
				// Scales may sit at unaligned offsets: assemble bytewise.
				uint32_t kb = 0, vb = 0;
				for (int b = 0; b < 4; b++) kb |= (uint32_t)kr[b] << (8 * b), vb |= (uint32_t)vr[b] << (8 * b);
				ksc[threadIdx.x] = __uint_as_float(kb);
				vsc[threadIdx.x] = __uint_as_float(vb);
			}
			__syncthreads();
			for (int e = threadIdx.x; e < n * head_dim; e += blockDim.x) {
				const int j = e / head_dim, d = e % head_dim;
				const int slot = k0 + j;
				const uint8_t *base = layer + (size_t)table[slot / block_size] * block_bytes;
				const size_t off = (size_t)(slot % block_size) * rb + (size_t)kvh * head_dim + d;
				ks[j * kstride + d] = (float)(int8_t)base[off] * ksc[j];
				vs[j * head_dim + d] = (float)(int8_t)base[(size_t)block_size * rb + off] * vsc[j];
			}
		} else if (head_dim % 8 == 0) {
			// 128-bit loads: 8 halves of one key (or value) row per thread.
			const int vecs = head_dim / 8;
			for (int e = threadIdx.x; e < n * vecs; e += blockDim.x) {
				const int j = e / vecs, d = (e % vecs) * 8;
				const int slot = k0 + j;
				const uint8_t *base = layer + (size_t)table[slot / block_size] * block_bytes;
				const size_t off = (size_t)(slot % block_size) * rb + ((size_t)kvh * head_dim + d) * 2;
				uint4 kr = *(const uint4 *)(base + off);
				uint4 vr = *(const uint4 *)(base + (size_t)block_size * rb + off);
				const half2 *kh = (const half2 *)&kr, *vh = (const half2 *)&vr;
#pragma unroll
				for (int i = 0; i < 4; i++) {
					float2 kf = __half22float2(kh[i]), vf = __half22float2(vh[i]);
					ks[j * kstride + d + 2 * i] = kf.x;
					ks[j * kstride + d + 2 * i + 1] = kf.y;
					vs[j * head_dim + d + 2 * i] = vf.x;
					vs[j * head_dim + d + 2 * i + 1] = vf.y;
				}
			}
		} else {
			for (int e = threadIdx.x; e < n * head_dim; e += blockDim.x) {
				const int j = e / head_dim, d = e % head_dim;
				const int slot = k0 + j;
				const uint8_t *base = layer + (size_t)table[slot / block_size] * block_bytes;
				const size_t off = (size_t)(slot % block_size) * rb + ((size_t)kvh * head_dim + d) * 2;
				ks[j * kstride + d] = __half2float(*(const half *)(base + off));
				vs[j * head_dim + d] = __half2float(*(const half *)(base + (size_t)block_size * rb + off));
			}
		}
		__syncthreads();
		if (!active || k0 >= me.k_end) continue;
		const int valid = min(n, me.k_end - k0);
		float s = -INFINITY;
		if (lane < valid) {
			s = 0.f;
			const float *kr = ks + lane * kstride;
			for (int d = 0; d < head_dim; d++) s = fmaf(myq[d], kr[d], s);
		}
		const float m_new = fmaxf(m, tc_warp_max(s));
		const float p = lane < valid ? expf(s - m_new) : 0.f;
		const float corr = expf(m - m_new); // 0 on the first tile (m = -inf)
		l = l * corr + tc_warp_sum(p);
#pragma unroll
		for (int k = 0; k < TC_ATTN_PER_LANE; k++) acc[k] *= corr;
		for (int j = 0; j < valid; j++) {
			const float pj = __shfl_sync(0xffffffffu, p, j);
			const float *vr = vs + j * head_dim;
#pragma unroll
			for (int k = 0; k < TC_ATTN_PER_LANE; k++) {
				int d = lane + 32 * k;
				if (d < head_dim) acc[k] = fmaf(pj, vr[d], acc[k]);
			}
		}
		m = m_new;
	}
	if (!active) return;
	if (me.part >= 0) {
		// Partial result of one key range: [max, normaliser, output...].
		float *pp = partials + (size_t)me.part * (head_dim + 2);
		if (lane == 0) pp[0] = m, pp[1] = l;
#pragma unroll
		for (int k = 0; k < TC_ATTN_PER_LANE; k++) {
			int d = lane + 32 * k;
			if (d < head_dim) pp[2 + d] = acc[k];
		}
		return;
	}
	float *out = dst + (size_t)me.q_row * heads * head_dim + (size_t)me.head * head_dim;
	const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
	for (int k = 0; k < TC_ATTN_PER_LANE; k++) {
		int d = lane + 32 * k;
		if (d < head_dim) out[d] = acc[k] * inv;
	}
}

// k_attn_combine folds a query's key-range partials in range order (fixed,
// so the result does not depend on scheduling): one warp per (row, head).
__global__ void k_attn_combine(float *dst, const float *partials, const tc_attn_combine *items, int n_items,
                               int heads, int head_dim) {
	const int item = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	const int lane = threadIdx.x % 32;
	if (item >= n_items) return;
	const tc_attn_combine it = items[item];
	const size_t stride = (size_t)head_dim + 2;
	const float *pp = partials + (size_t)it.first_part * stride;
	float mx = -INFINITY;
	for (int c = 0; c < it.n_parts; c++) mx = fmaxf(mx, pp[c * stride]);
	float l = 0.f;
	float acc[TC_ATTN_PER_LANE];
#pragma unroll
	for (int k = 0; k < TC_ATTN_PER_LANE; k++) acc[k] = 0.f;
	for (int c = 0; c < it.n_parts; c++) {
		const float *p = pp + c * stride;
		const float w = expf(p[0] - mx);
		l = fmaf(p[1], w, l);
#pragma unroll
		for (int k = 0; k < TC_ATTN_PER_LANE; k++) {
			int d = lane + 32 * k;
			if (d < head_dim) acc[k] = fmaf(p[2 + d], w, acc[k]);
		}
	}
	float *out = dst + (size_t)it.q_row * heads * head_dim + (size_t)it.head * head_dim;
	const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
	for (int k = 0; k < TC_ATTN_PER_LANE; k++) {
		int d = lane + 32 * k;
		if (d < head_dim) out[d] = acc[k] * inv;
	}
}

extern "C" int tandem_cuda_attention(tc_ctx *c, float *d_dst, const float *d_q, const void *d_layer,
                                     int kv_dtype, int block_size, int heads, int kv_heads, int head_dim,
                                     float scale, const tc_attn_task *h_tasks, int n_tasks,
                                     const int32_t *h_tables, int n_tables, const tc_attn_combine *h_combine,
                                     int n_combine, int n_parts, int staged) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (n_tasks <= 0) return TC_OK;
	if (n_tasks % TC_ATTN_WARPS != 0 || n_tables <= 0 || block_size <= 0 || kv_heads <= 0 ||
	    heads % kv_heads != 0 || n_combine < 0 || n_parts < 0 || (n_combine > 0) != (n_parts > 0)) {
		return TC_ERR_ARG;
	}
	if (head_dim <= 0 || head_dim > TC_ATTN_MAX_HD) return TC_ERR_UNSUPPORTED;
	if (kv_dtype != TC_KV_F16 && kv_dtype != TC_KV_INT8) return TC_ERR_UNSUPPORTED;
	// Work buffer layout: tasks | tables | combine items | partials, each
	// 16-byte aligned.
	const size_t task_bytes = (size_t)n_tasks * sizeof(tc_attn_task);
	const size_t table_off = (task_bytes + 15) / 16 * 16;
	const size_t table_bytes = (size_t)n_tables * sizeof(int32_t);
	const size_t comb_off = (table_off + table_bytes + 15) / 16 * 16;
	const size_t comb_bytes = (size_t)n_combine * sizeof(tc_attn_combine);
	const size_t part_off = (comb_off + comb_bytes + 15) / 16 * 16;
	const size_t part_bytes = (size_t)n_parts * (head_dim + 2) * sizeof(float);
	const size_t total = part_off + part_bytes;
	if (staged && (c->attn == nullptr || total > c->attn_bytes)) return TC_ERR_ARG;
	if (!staged) {
		if (total > c->attn_bytes) {
			size_t want = total + total / 2;
			if (c->attn != nullptr) {
				// Earlier attention kernels may still read the old list.
				TC_CHECK(cudaStreamSynchronize(c->stream));
				TC_CHECK(cudaFree(c->attn));
				c->attn = nullptr;
				c->attn_bytes = 0;
			}
			TC_CHECK(cudaMalloc(&c->attn, want));
			c->attn_bytes = want;
		}
		// Stream-ordered: the copies wait for earlier kernels that read the
		// previous list. Pageable sources are staged before returning.
		char *a = (char *)c->attn;
		TC_CHECK(cudaMemcpyAsync(a, h_tasks, task_bytes, cudaMemcpyHostToDevice, c->stream));
		TC_CHECK(cudaMemcpyAsync(a + table_off, h_tables, table_bytes, cudaMemcpyHostToDevice, c->stream));
		if (n_combine > 0) {
			TC_CHECK(cudaMemcpyAsync(a + comb_off, h_combine, comb_bytes, cudaMemcpyHostToDevice, c->stream));
		}
	}
	char *a = (char *)c->attn;
	const void *tasks = a, *tables = a + table_off, *combine = a + comb_off;
	float *partials = (float *)(a + part_off);
	size_t smem = tc_attn_smem(head_dim);
	if (smem > 48 * 1024) {
		TC_CHECK(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
	}
	k_attention<<<n_tasks / TC_ATTN_WARPS, TC_ATTN_WARPS * 32, smem, c->stream>>>(
	    d_dst, partials, d_q, (const uint8_t *)d_layer, kv_dtype, block_size, heads, kv_heads, head_dim, scale,
	    (const tc_attn_task *)tasks, (const int32_t *)tables);
	rc = tc_launched();
	if (rc != TC_OK || n_combine == 0) return rc;
	k_attn_combine<<<tc_blocks((size_t)n_combine, 4), 4 * 32, 0, c->stream>>>(
	    d_dst, partials, (const tc_attn_combine *)combine, n_combine, heads, head_dim);
	return tc_launched();
}
