package cpu

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// SmolLM2-135M's matrix shapes (rows x cols of the ggml weight).
var benchShapes = []struct{ rows, cols int }{
	{576, 576},  // attn_q, attn_output
	{1536, 576}, // ffn_gate, ffn_up
	{576, 1536}, // ffn_down
}

// benchThreads is one thread per CPU, or TANDEM_BENCH_THREADS: on a shared
// machine one thread's best-of-N run measures a core's kernel throughput
// with less noise than two threads that each lose time slices.
func benchThreads() int {
	if n, err := strconv.Atoi(os.Getenv("TANDEM_BENCH_THREADS")); err == nil && n >= 1 && n <= maxThreads {
		return n
	}
	return runtime.NumCPU()
}

// cpuSeconds is the process's user+system CPU time. With one kernel thread
// (TANDEM_BENCH_THREADS=1) tokens per CPU second compares kernels on a shared
// machine, where wall time also counts other processes' time slices.
func cpuSeconds(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkMatMul reports weight bytes streamed per second (GB/s, the decode
// bound) and arithmetic throughput (GFLOP/s, the prefill bound).
//
// act=q8 is llama.cpp's arithmetic (8-bit activations, integer dots); act=f32
// is the default full-precision path (kernels.ActF32).
func BenchmarkMatMul(b *testing.B) {
	bes := map[kernels.Activations]*Backend{}
	for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
		bes[act] = newBackend(b, Config{Threads: benchThreads(), MaxLevel: LevelAVX512, Activations: act})
	}
	types := []quant.Type{quant.Q4_1, quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q6_K, quant.F16}
	for _, typ := range types {
		for _, sh := range benchShapes {
			// K-quant rows hold whole 256-value superblocks: 576 becomes 768.
			cols := (sh.cols + typ.BlockSize() - 1) / typ.BlockSize() * typ.BlockSize()
			for _, T := range []int{1, 4, 64, 512} {
				for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
					if act == kernels.ActF32 && typ == quant.F16 {
						continue // float weights have one path
					}
					b.Run(fmt.Sprintf("%v/%dx%d/T=%d/act=%v", typ, sh.rows, cols, T, act), func(b *testing.B) {
						benchMatMul(b, bes[act], typ, sh.rows, cols, T)
					})
				}
			}
		}
	}
	for _, act := range []kernels.Activations{kernels.ActQ8, kernels.ActF32} {
		b.Run(fmt.Sprintf("Q8_0/49152x576/T=1/act=%v", act), func(b *testing.B) { benchMatMul(b, bes[act], quant.Q8_0, 49152, 576, 1) })
	}
}

func benchMatMul(b *testing.B, be *Backend, typ quant.Type, rows, cols, T int) {
	r := rand.New(rand.NewPCG(1, 2))
	data := randWeights(r, typ, rows, cols)
	w, err := be.NewWeight(typ, rows, cols, data)
	if err != nil {
		b.Fatal(err)
	}
	x := tensorOf(be, T, cols, randVec(r, T*cols, 1))
	dst := be.NewTensor(T, rows)
	b.ResetTimer()
	for b.Loop() {
		be.MatMul(dst, x, w)
	}
	s := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(float64(len(data))/s/1e9, "GB/s")
	b.ReportMetric(2*float64(rows*cols*T)/s/1e9, "GFLOP/s")
}

// BenchmarkMemBandwidth streams a 256 MiB buffer through every pool thread:
// the practical memory bandwidth that batch-1 decode cannot exceed.
func BenchmarkMemBandwidth(b *testing.B) {
	be := newBackend(b, Config{Threads: benchThreads(), MaxLevel: LevelAVX512})
	buf := make([]byte, 256<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	b.SetBytes(int64(len(buf)))
	var sink uint64
	for b.Loop() {
		sink += be.streamRead(buf)
	}
	if sink == 1 {
		b.Log(sink)
	}
	b.ReportMetric(float64(len(buf))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkDispatch is the pool's cost per kernel call with no work.
func BenchmarkDispatch(b *testing.B) {
	be := newBackend(b, Config{Threads: benchThreads(), MaxLevel: LevelAVX512})
	for b.Loop() {
		be.dispatchNop()
	}
}

// BenchmarkAttention times one layer's attention for decode (1 query over a
// long context) and prefill (512 causal queries), SmolLM2 heads.
func BenchmarkAttention(b *testing.B) {
	be := newBackend(b, Config{Threads: benchThreads(), MaxLevel: LevelAVX512})
	for _, c := range []struct {
		name     string
		kv, q    int
		dtype    kernels.KVDType
		blockLen int
	}{
		{"decode/ctx=1024/f16", 1024, 1, kernels.KVF16, 16},
		{"decode/ctx=1024/int8", 1024, 1, kernels.KVInt8, 16},
		{"prefill/512/f16", 512, 512, kernels.KVF16, 16},
	} {
		b.Run(c.name, func(b *testing.B) {
			spec := kernels.KVSpec{Layers: 1, Blocks: (c.kv + c.blockLen - 1) / c.blockLen, BlockSize: c.blockLen, KVHeads: 3, HeadDim: 64, DType: c.dtype}
			cache, err := be.NewKVCache(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			r := rand.New(rand.NewPCG(1, 1))
			slots := make([]int32, c.kv)
			blocks := make([]int32, spec.Blocks)
			for i := range slots {
				slots[i] = int32(i)
			}
			for i := range blocks {
				blocks[i] = int32(i)
			}
			be.StoreKV(cache, 0, tensorOf(be, c.kv, 192, randVec(r, c.kv*192, 1)), tensorOf(be, c.kv, 192, randVec(r, c.kv*192, 1)), slots)
			q := tensorOf(be, c.q, 576, randVec(r, c.q*576, 1))
			dst := be.NewTensor(c.q, 576)
			p := kernels.AttnParams{Heads: 9, KVHeads: 3, HeadDim: 64, Scale: 0.125,
				Seqs: []kernels.AttnSeq{{QueryLen: c.q, KVLen: c.kv, Blocks: blocks}}}
			for b.Loop() {
				be.Attention(dst, q, cache, 0, p)
			}
		})
	}
}
