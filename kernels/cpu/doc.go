// Package cpu is Tandem's fast CPU compute backend: kernels.Backend on host
// memory, with the arithmetic in C (cgo) and SIMD.
//
// Model. Weights stay where the caller put them (usually a read-only mmap of
// the GGUF file) and are never copied. MatMul runs in one of two activation
// precisions (Config.Activations). With kernels.ActF32, the default,
// activations stay f32 and weights are dequantized with one fixed arithmetic:
// in registers for small batches, into a per-thread tile for large ones, the
// two giving identical bits. With kernels.ActQ8, llama.cpp's arithmetic, each
// activation row is quantized once per call to an 8-bit format matching the
// weight type (32-value blocks for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256-value blocks
// for Q4_K/Q5_K/Q6_K) and dotted with exact integer block sums. Either way the
// kernels sweep register-blocked tiles of weight rows x activation rows, so a
// weight block is loaded once per tile rather than once per token, and every
// (weight row, activation row) pair runs the same instruction sequence
// whatever the tile shape, which makes results batch-invariant: a row is
// bit-identical alone or in a batch of any size.
//
// The kernel level is chosen once per Backend from the running CPU:
// AVX-512 VNNI, AVX2+FMA+F16C (maddubs+madd), or portable C. Config.MaxLevel
// caps it, which tests use to check every level on one machine. The AVX-512
// level runs its full-precision tiles on 512-bit vectors (16 lanes per pair)
// and, with 8-bit activations, multiplies Q4_0/Q4_1/Q8_0 with 16 weight rows
// in the lanes of one register (tk_q8rows.h): a block of 16 rows is
// transposed in registers and each vpdpbusd covers four columns of all 16
// rows, so the float work per block is shared by 16 rows and no horizontal
// sums remain. The weights keep their GGUF layout; nothing is repacked or
// copied.
//
// Threads. A Backend owns a persistent pool of Config.Threads-1 C threads;
// the calling goroutine's thread is thread 0. Work is split into chunks that
// threads claim with one atomic operation, so a thread the OS deschedules
// holds up one chunk at most. Waiting threads spin briefly, yield for about
// half a millisecond, then sleep, because a decode step runs a few hundred
// kernels of tens of microseconds each. Close joins the threads. Like every
// kernels.Backend, a Backend is used by one goroutine at a time;
// KVCache.ReadBlock/WriteBlock may run concurrently on blocks that no step
// touches.
//
// The KV cache is one anonymous mmap per layer, so a large cache costs
// physical memory only for the blocks that are written.
package cpu
