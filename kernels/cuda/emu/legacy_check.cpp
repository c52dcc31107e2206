// legacy_check runs the device code of ../csrc/legacy.cuh for the 32-value
// block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) on the host (cuda_runtime.h
// here emulates the GPU) so that machines without a GPU can test it;
// emu_legacy_test.go builds and drives it and compares with kernels/quant.
//
//   legacy_check IN OUT
//
// IN: uint32 type, rows, cols, n (little-endian), then rows x cols weights in
// the ggml encoding, then n x cols float32 activations. OUT: the repacked
// weights (the device layout, rows*cols/32 blocks), the dequantized weights
// (rows x cols float32, as the embedding reads them), the activations' Q8_1
// codes (n x cols int8) and (d, s) halves (n x cols/32 pairs), the product
// (n x rows float32) computed in the token groups tandem_cuda_matmul uses,
// and the same product computed one token at a time.
#include <cstdio>

#include "check_io.h"
#include "common.cuh"
#include "legacy.cuh"

thread_local dim3 threadIdx, blockIdx;
thread_local emu_warp *emu_cur_warp;
dim3 blockDim;

template <int TYPE, int NC>
static void group(float *dst, const uint8_t *w, const int8_t *qs, const half2 *ds, int groups, int t0, int rows,
                  int nbr) {
	emu_launch(dim3(tc_blocks((size_t)rows, TC_MV_WARPS), groups), TC_MV_WARPS * 32,
	           [&] { k_mmvq<TYPE, NC>(dst, w, qs, ds, rows, nbr, t0); });
}

// product mirrors tc_launch_q in matmul.cu (groups of 16, then 8, 4, 2, 1),
// or launches one token at a time when single is set.
template <int TYPE>
static void product(float *dst, const uint8_t *w, const int8_t *qs, const half2 *ds, int t, int rows, int nbr,
                    bool single) {
	if (single) {
		for (int i = 0; i < t; i++) group<TYPE, 1>(dst, w, qs, ds, 1, i, rows, nbr);
		return;
	}
	int full = t / TC_MAX_COLS, t0 = full * TC_MAX_COLS;
	if (full > 0) group<TYPE, TC_MAX_COLS>(dst, w, qs, ds, full, 0, rows, nbr);
	if (t - t0 >= 8) group<TYPE, 8>(dst, w, qs, ds, 1, t0, rows, nbr), t0 += 8;
	if (t - t0 >= 4) group<TYPE, 4>(dst, w, qs, ds, 1, t0, rows, nbr), t0 += 4;
	if (t - t0 >= 2) group<TYPE, 2>(dst, w, qs, ds, 1, t0, rows, nbr), t0 += 2;
	if (t - t0 >= 1) group<TYPE, 1>(dst, w, qs, ds, 1, t0, rows, nbr);
}

static void product_of(int type, float *dst, const uint8_t *w, const int8_t *qs, const half2 *ds, int t, int rows,
                       int nbr, bool single) {
	switch (type) {
	case TC_Q4_0: product<TC_Q4_0>(dst, w, qs, ds, t, rows, nbr, single); return;
	case TC_Q4_1: product<TC_Q4_1>(dst, w, qs, ds, t, rows, nbr, single); return;
	case TC_Q5_0: product<TC_Q5_0>(dst, w, qs, ds, t, rows, nbr, single); return;
	case TC_Q5_1: product<TC_Q5_1>(dst, w, qs, ds, t, rows, nbr, single); return;
	default: product<TC_Q8_0>(dst, w, qs, ds, t, rows, nbr, single); return;
	}
}

static bool is_legacy(int type) {
	return type == TC_Q4_0 || type == TC_Q4_1 || type == TC_Q5_0 || type == TC_Q5_1 || type == TC_Q8_0;
}

int main(int argc, char **argv) {
	check_case c;
	if (!check_read_case(argc, argv, "legacy_check", c)) return 2;
	const std::vector<uint8_t> &in = c.in;
	int type = c.type, rows = c.rows, cols = c.cols, n = c.n;
	if (!is_legacy(type) || rows <= 0 || cols <= 0 || cols % 32 != 0 || n <= 0) {
		fprintf(stderr, "legacy_check: bad case: type %d, %d x %d, %d tokens\n", type, rows, cols, n);
		return 2;
	}
	size_t nbr = (size_t)cols / 32, nb = (size_t)rows * nbr, nx = (size_t)n * nbr;
	size_t qsb = tc_qs_bytes(type), scb = tc_scale_bytes(type), gb = tc_ggml_block_bytes(type);
	if (in.size() != 16 + nb * gb + (size_t)n * cols * 4) {
		fprintf(stderr, "legacy_check: %s has %zu bytes, want %zu\n", argv[1], in.size(),
		        16 + nb * gb + (size_t)n * cols * 4);
		return 2;
	}
	const uint8_t *src = in.data() + 16;
	std::vector<float> x((size_t)n * cols);
	memcpy(x.data(), src + nb * gb, x.size() * 4);

	// Repacked into a 16-byte aligned buffer, as cudaMalloc's, so that the
	// 128-bit loads are aligned as on the device.
	std::vector<int4> wbuf((nb * gb + 15) / 16);
	uint8_t *w = (uint8_t *)wbuf.data();
	emu_launch(dim3(tc_blocks(nb, 256)), 256, [&] {
		size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
		if (b < nb) tc_repack_block(w, w + nb * qsb, src, b, type);
	});
	std::vector<float> deq((size_t)rows * cols);
	for (size_t b = 0; b < nb; b++) {
		for (int j = 0; j < 32; j++) deq[b * 32 + j] = tc_qweight_value(w + b * qsb, w + nb * qsb + b * scb, type, j);
	}

	std::vector<int4> qbuf(nx * 2);
	int8_t *qs = (int8_t *)qbuf.data();
	std::vector<half2> ds(nx);
	emu_launch(dim3(tc_blocks(nx * 32, 256)), 256, [&] {
		size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
		if (i / 32 < nx) tc_quantize_q8_1(qs, ds.data(), x.data(), i);
	});

	std::vector<float> grouped((size_t)n * rows), single((size_t)n * rows);
	product_of(type, grouped.data(), w, qs, ds.data(), n, rows, (int)nbr, false);
	product_of(type, single.data(), w, qs, ds.data(), n, rows, (int)nbr, true);

	FILE *f = fopen(argv[2], "wb");
	if (f == nullptr) {
		fprintf(stderr, "legacy_check: cannot create %s\n", argv[2]);
		return 2;
	}
	bool ok = fwrite(w, 1, nb * gb, f) == nb * gb && fwrite(deq.data(), 4, deq.size(), f) == deq.size() &&
	          fwrite(qs, 1, nx * 32, f) == nx * 32 && fwrite(ds.data(), 4, ds.size(), f) == ds.size() &&
	          fwrite(grouped.data(), 4, grouped.size(), f) == grouped.size() &&
	          fwrite(single.data(), 4, single.size(), f) == single.size();
	if (fclose(f) != 0 || !ok) {
		fprintf(stderr, "legacy_check: writing %s failed\n", argv[2]);
		return 2;
	}
	return 0;
}
