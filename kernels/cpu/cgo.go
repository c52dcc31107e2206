package cpu

// Only tk_avx2.c and tk_avx512.c are compiled for the SIMD targets (by
// pragma); tk.h turns off floating-point contraction for every C file.

/*
#cgo CFLAGS: -O3 -std=gnu11 -fno-strict-aliasing
#cgo LDFLAGS: -lm -lpthread
#include <stdlib.h>
#include "tk_ops.h"

// quant_q8a_level quantizes one activation row as level k's MatMul does.
static void quant_q8a_level(const tk_kernels *k, const float *x, uint8_t *y, int n) {
	if (k->quant_q8a) {
		k->quant_q8a(x, (tk_q8a *)y, n);
	} else {
		tk_quantize_q8a(x, (tk_q8a *)y, n);
	}
}
*/
import "C"

import (
	"unsafe"
)

// cKernels owns a C kernel table, allocated in C memory so C threads may
// keep pointers to it for the Backend's lifetime.
type cKernels struct {
	k     *C.tk_kernels
	level Level
	name  string
}

func newKernels(max Level) *cKernels {
	k := (*C.tk_kernels)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tk_kernels{}))))
	lvl := Level(C.tk_select(k, C.int(max)))
	return &cKernels{k: k, level: lvl, name: C.GoString(k.name)}
}

func (k *cKernels) free() {
	C.free(unsafe.Pointer(k.k))
	k.k = nil
}

func (k *cKernels) tileShape() (mr, nr int) { return int(k.k.mr), int(k.k.nr) }

type cPool struct{ p *C.tk_pool }

func newPool(threads int) *cPool {
	p := C.tk_pool_new(C.int(threads))
	if p == nil {
		return nil
	}
	return &cPool{p: p}
}

func (p *cPool) free() {
	C.tk_pool_free(p.p)
	p.p = nil
}

func f32p(s []float32) *C.float { return (*C.float)(unsafe.Pointer(unsafe.SliceData(s))) }
func u8p(s []byte) *C.uint8_t   { return (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(s))) }
func i32p(s []int32) *C.int32_t { return (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(s))) }
func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// actBytes is the size of one quantized activation row for a weight type (0
// for float types).
func actBytes(typ uint32, cols int) int { return int(C.tk_act_bytes(C.int(typ), C.int(cols))) }

func cMatMul(p *cPool, k *cKernels, typ uint32, w []byte, rows, cols int, x []float32, T int, out []float32, scratch []byte) bool {
	return C.tk_matmul(p.p, k.k, C.int(typ), u8p(w), C.int(rows), C.int(cols), f32p(x), C.int(T), f32p(out), u8p(scratch)) == 0
}

func cRMSNorm(p *cPool, dst, x, w []float32, rows, cols int, eps float32) {
	C.tk_rmsnorm(p.p, f32p(dst), f32p(x), f32p(w), C.int(rows), C.int(cols), C.float(eps))
}

func cAdd(p *cPool, dst, x []float32, rows, cols int) {
	C.tk_add(p.p, f32p(dst), f32p(x), C.int(rows), C.int(cols))
}

func cSwiGLU(p *cPool, k *cKernels, dst, gate, up []float32, rows, cols int) {
	C.tk_swiglu(p.p, k.k, f32p(dst), f32p(gate), f32p(up), C.int(rows), C.int(cols))
}

func cRoPE(p *cPool, x []float32, pos []int32, rows, cols, heads, headDim, dims int, base, freqScale float32, interleaved bool) {
	C.tk_rope(p.p, f32p(x), i32p(pos), C.int(rows), C.int(cols), C.int(heads), C.int(headDim),
		C.int(dims), C.float(base), C.float(freqScale), cbool(interleaved))
}

func cEmbed(p *cPool, dst []float32, typ uint32, table []byte, cols int, ids []int32) {
	C.tk_embed(p.p, f32p(dst), C.int(typ), u8p(table), C.int(cols), i32p(ids), C.int(len(ids)))
}

func cStoreKV(region []byte, blockSize, kvHeads, headDim, dtype int, k, v []float32, slots []int32) {
	C.tk_store_kv(u8p(region), C.int(blockSize), C.int(kvHeads), C.int(headDim), C.int(dtype),
		f32p(k), f32p(v), i32p(slots), C.int(len(slots)))
}

// attnScratch is the per-thread scratch (floats) Attention needs.
func attnScratch(blockSize, headDim, heads, kvHeads int) int {
	return int(C.tk_attn_scratch(C.int(blockSize), C.int(headDim), C.int(heads), C.int(kvHeads)))
}

type attnCall struct {
	dst, q                      []float32
	region                      []byte
	blockSize, kvHeads, headDim int
	dtype, heads                int
	scale                       float32
	seqs, blocks, itemOff       []int32
	scratch                     []float32
}

func cAttention(p *cPool, k *cKernels, a *attnCall) {
	C.tk_attention(p.p, k.k, f32p(a.dst), f32p(a.q), u8p(a.region), C.int(a.blockSize),
		C.int(a.kvHeads), C.int(a.headDim), C.int(a.dtype), C.int(a.heads), C.float(a.scale),
		C.int(len(a.seqs)/4), i32p(a.seqs), i32p(a.blocks), i32p(a.itemOff), f32p(a.scratch))
}

// quantQ8A exposes a level's activation quantization to tests: x (a multiple
// of 32 values) as tk_q8a blocks.
func (k *cKernels) quantQ8A(x []float32) []byte {
	y := make([]byte, actBytes(C.TK_Q4_0, len(x)))
	C.quant_q8a_level(k.k, f32p(x), u8p(y), C.int(len(x)))
	return y
}

// cF16ToF32 and cF32ToF16 expose the C half-float conversions to tests.
func cF16ToF32(h uint16) float32 { return float32(C.tk_f16_to_f32(C.uint16_t(h))) }
func cF32ToF16(f float32) uint16 { return uint16(C.tk_f32_to_f16(C.float(f))) }

// streamRead sums buf across the pool; benchmarks use it to measure memory
// bandwidth with the same threads the kernels use.
func (b *Backend) streamRead(buf []byte) uint64 {
	return uint64(C.tk_stream_read(b.pool.p, u8p(buf), C.size_t(len(buf))))
}

// dispatchNop runs an empty task on every pool thread: the per-kernel
// threading overhead.
func (b *Backend) dispatchNop() { C.tk_pool_nop(b.pool.p) }
