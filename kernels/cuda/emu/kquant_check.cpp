// kquant_check runs the K-quant device code of ../csrc/kquant.cuh on the host
// (cuda_runtime.h here emulates the GPU) so that machines without a GPU can
// test it; emu_test.go builds and drives it and compares with kernels/quant.
//
//   kquant_check IN OUT
//
// IN: uint32 type, rows, cols, n (little-endian), then rows x cols weights in
// the ggml encoding, then n x cols float32 activations. OUT: the dequantized
// weights (rows x cols float32, as the embedding reads them), the activations'
// Q8_K codes (n x cols int8), scales (n x cols/256 float32) and run sums
// (n x cols/16 int16), the product
// (n x rows float32) computed in the token groups tandem_cuda_matmul uses, and
// the same product computed one token at a time.
#include <cstdio>

#include "check_io.h"
#include "common.cuh"
#include "kquant.cuh"

thread_local dim3 threadIdx, blockIdx;
thread_local emu_warp *emu_cur_warp;
dim3 blockDim;

template <int TYPE, int NC>
static void group(float *dst, const uint8_t *w, tc_q8k x, int groups, int t0, int rows, int nbr) {
	emu_launch(dim3(tc_blocks((size_t)rows, TC_MV_WARPS), groups), TC_MV_WARPS * 32,
	           [&] { k_mmvq_k<TYPE, NC>(dst, w, x, rows, nbr, t0); });
}

// product mirrors tc_launch_k in matmul_k.cu (groups of 16, then 8, 4, 2,
// 1), or launches one token at a time when single is set.
template <int TYPE>
static void product(float *dst, const uint8_t *w, tc_q8k x, int t, int rows, int nbr, bool single) {
	if (single) {
		for (int i = 0; i < t; i++) group<TYPE, 1>(dst, w, x, 1, i, rows, nbr);
		return;
	}
	int full = t / TC_MAX_COLS, t0 = full * TC_MAX_COLS;
	if (full > 0) group<TYPE, TC_MAX_COLS>(dst, w, x, full, 0, rows, nbr);
	if (t - t0 >= 8) group<TYPE, 8>(dst, w, x, 1, t0, rows, nbr), t0 += 8;
	if (t - t0 >= 4) group<TYPE, 4>(dst, w, x, 1, t0, rows, nbr), t0 += 4;
	if (t - t0 >= 2) group<TYPE, 2>(dst, w, x, 1, t0, rows, nbr), t0 += 2;
	if (t - t0 >= 1) group<TYPE, 1>(dst, w, x, 1, t0, rows, nbr);
}

static bool product_of(int type, float *dst, const uint8_t *w, tc_q8k x, int t, int rows, int nbr, bool single) {
	switch (type) {
	case TC_Q4_K: product<TC_Q4_K>(dst, w, x, t, rows, nbr, single); return true;
	case TC_Q5_K: product<TC_Q5_K>(dst, w, x, t, rows, nbr, single); return true;
	case TC_Q6_K: product<TC_Q6_K>(dst, w, x, t, rows, nbr, single); return true;
	}
	return false;
}

int main(int argc, char **argv) {
	check_case c;
	if (!check_read_case(argc, argv, "kquant_check", c)) return 2;
	const std::vector<uint8_t> &in = c.in;
	int type = c.type, rows = c.rows, cols = c.cols, n = c.n;
	if (!tc_is_kquant(type) || rows <= 0 || cols <= 0 || cols % TC_QK != 0 || n <= 0) {
		fprintf(stderr, "kquant_check: bad case: type %d, %d x %d, %d tokens\n", type, rows, cols, n);
		return 2;
	}
	size_t nbr = (size_t)cols / TC_QK, nb = (size_t)rows * nbr, nx = (size_t)n * nbr;
	size_t qsb = tc_qs_bytes(type), gb = tc_ggml_block_bytes(type);
	if (in.size() != 16 + nb * gb + (size_t)n * cols * 4) {
		fprintf(stderr, "kquant_check: %s has %zu bytes, want %zu\n", argv[1], in.size(),
		        16 + nb * gb + (size_t)n * cols * 4);
		return 2;
	}
	const uint8_t *src = in.data() + 16;
	std::vector<float> x((size_t)n * cols);
	memcpy(x.data(), src + nb * gb, x.size() * 4);

	std::vector<uint8_t> w(nb * gb);
	emu_launch(dim3(tc_blocks(nb, 256)), 256, [&] {
		size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
		if (b < nb) tc_repack_block(w.data(), w.data() + nb * qsb, src, b, type);
	});
	std::vector<float> deq((size_t)rows * cols);
	for (size_t b = 0; b < nb; b++) {
		for (int j = 0; j < TC_QK; j++) {
			deq[b * TC_QK + j] = tc_kweight_value(w.data() + b * qsb, w.data() + nb * qsb + b * tc_scale_bytes(type),
			                                      type, j);
		}
	}

	std::vector<int8_t> qs(nx * TC_QK);
	std::vector<float> d(nx);
	std::vector<int16_t> bsums(nx * 16);
	emu_launch(dim3(tc_blocks(nx * 32, 256)), 256, [&] {
		size_t blk = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
		if (blk < nx) tc_quantize_q8_k(qs.data(), d.data(), bsums.data(), x.data(), blk, threadIdx.x % 32);
	});

	std::vector<float> grouped((size_t)n * rows), single((size_t)n * rows);
	tc_q8k act = {qs.data(), d.data(), bsums.data()};
	product_of(type, grouped.data(), w.data(), act, n, rows, (int)nbr, false);
	product_of(type, single.data(), w.data(), act, n, rows, (int)nbr, true);

	FILE *f = fopen(argv[2], "wb");
	if (f == nullptr) {
		fprintf(stderr, "kquant_check: cannot create %s\n", argv[2]);
		return 2;
	}
	bool ok = fwrite(deq.data(), 4, deq.size(), f) == deq.size() && fwrite(qs.data(), 1, qs.size(), f) == qs.size() &&
	          fwrite(d.data(), 4, d.size(), f) == d.size() &&
	          fwrite(bsums.data(), 2, bsums.size(), f) == bsums.size() &&
	          fwrite(grouped.data(), 4, grouped.size(), f) == grouped.size() &&
	          fwrite(single.data(), 4, single.size(), f) == single.size();
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "kquant_check: writing %s failed\n", argv[2]);
		return 2;
	}
	return 0;
}
