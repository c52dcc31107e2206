// Package bench measures the transport on loopback: gRPC against a raw TCP
// copy of the same bytes, shared memory against a plain memcpy, for a range
// of transfer sizes, and the time to hand over the KV cache of a 1,024-token
// prompt of the default model (SmolLM2-135M, f16).
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
)

// Options control a run.
type Options struct {
	Sizes      []int         // transfer sizes in bytes, multiples of 16 KiB
	Runs       int           // repetitions per figure; the median is reported
	MinTime    time.Duration // minimum measured time per repetition
	ChunkBytes int           // chunk size of gRPC transfers
	// SHMChunkBytes is the shared-memory chunk (and staging slot) size;
	// smaller than the gRPC chunk so that the sender's copy into one slot
	// overlaps the receiver's copy out of another within a transfer.
	SHMChunkBytes int
	Logger        *slog.Logger
}

// DefaultOptions measures 16 KiB to 4 MiB, median of 5.
func DefaultOptions() Options {
	return Options{
		Sizes:         []int{16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20},
		Runs:          5,
		MinTime:       200 * time.Millisecond,
		ChunkBytes:    1 << 20,
		SHMChunkBytes: 256 << 10,
		Logger:        slog.New(slog.DiscardHandler),
	}
}

// Validate checks the options.
func (o Options) Validate() error {
	if len(o.Sizes) == 0 || o.Runs <= 0 || o.MinTime <= 0 || o.ChunkBytes < 4<<10 || o.SHMChunkBytes < 4<<10 || o.Logger == nil {
		return fmt.Errorf("bench: invalid options %+v", o)
	}
	for _, s := range o.Sizes {
		if s <= 0 || s%sweepBlock != 0 || s > 64<<20 {
			return fmt.Errorf("bench: size %d must be a positive multiple of %d up to 64 MiB", s, sweepBlock)
		}
	}
	return nil
}

// SizeResult holds one transfer size's throughputs in GB/s (1e9 bytes/s).
type SizeResult struct {
	Bytes      int     `json:"bytes"`
	GRPCGbps   float64 `json:"grpc_gbps"`
	TCPGbps    float64 `json:"tcp_gbps"`
	SHMGbps    float64 `json:"shm_gbps"`
	MemcpyGbps float64 `json:"memcpy_gbps"`
	// The ratios are medians of per-round ratios (see interleave).
	GRPCVsTCP   float64 `json:"grpc_vs_tcp"`
	SHMVsMemcpy float64 `json:"shm_vs_memcpy"`
}

// Report is the benchmark's JSON output. The top-level throughputs are the
// 1 MiB figures, the size the targets are stated for.
type Report struct {
	Host          string       `json:"host"`
	CPUs          int          `json:"cpus"`
	GoVersion     string       `json:"go_version"`
	Runs          int          `json:"runs"`
	ChunkBytes    int          `json:"chunk_bytes"`
	SHMChunkBytes int          `json:"shm_chunk_bytes"`
	Sizes         []SizeResult `json:"sizes"`

	GRPCGbps     float64 `json:"grpc_gbps"`
	TCPGbps      float64 `json:"tcp_gbps"`
	SHMGbps      float64 `json:"shm_gbps"`
	MemcpyGbps   float64 `json:"memcpy_gbps"`
	GRPCMTLSGbps float64 `json:"grpc_mtls_gbps"`
	GRPCVsTCP    float64 `json:"grpc_vs_tcp"`
	SHMVsMemcpy  float64 `json:"shm_vs_memcpy"`

	KVTokens       int     `json:"kv_tokens"`
	KVBytes        int64   `json:"kv_bytes"`
	KV1024TokensMs float64 `json:"kv_1024_tokens_ms"` // gRPC over mutual TLS, reserve to claim
	KV1024PlainMs  float64 `json:"kv_1024_tokens_grpc_plain_ms"`
	KV1024SHMMs    float64 `json:"kv_1024_tokens_shm_ms"`
	KV1024TCPMs    float64 `json:"kv_1024_tokens_tcp_ms"`
	KV1024MemcpyMs float64 `json:"kv_1024_tokens_memcpy_ms"`
}

// sweepBlock is the block size of the size sweep's cache: one layer of
// 16 KiB blocks, so an S-byte transfer is S/16 KiB blocks.
const sweepBlock = 16 << 10

// sweepSpec is one layer of 16 KiB blocks, room for two transfers of max bytes.
func sweepSpec(max int) kernels.KVSpec {
	return kernels.KVSpec{Layers: 1, Blocks: 2 * max / sweepBlock, BlockSize: 16, KVHeads: 4, HeadDim: 64, DType: kernels.KVF16}
}

// SmolLM2Spec is the default model's KV shape (30 layers, 3 KV heads of 64,
// f16) with 16-token blocks: 23,592,960 bytes per 1,024 tokens.
func SmolLM2Spec(blocks int) kernels.KVSpec {
	return kernels.KVSpec{Layers: 30, Blocks: blocks, BlockSize: 16, KVHeads: 3, HeadDim: 64, DType: kernels.KVF16}
}

// Run executes the benchmark.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	rep := &Report{Host: host, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Runs: opts.Runs, ChunkBytes: opts.ChunkBytes, SHMChunkBytes: opts.SHMChunkBytes}
	dir, err := os.MkdirTemp("", "tandem-bench-*")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	maxSize := slices.Max(opts.Sizes)
	sweep := sweepSpec(maxSize)
	if err := os.Mkdir(dir+"/sweep", 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e, err := newEndpoint(ctx, sweep, dir+"/sweep", opts, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer e.close()
	tcp, err := newTCPPair(maxSize)
	if err != nil {
		return nil, err
	}
	defer tcp.close()
	src, _ := e.src.Region(0)
	memDst := make([]byte, maxSize)
	copy(memDst, src[:maxSize])

	for _, size := range opts.Sizes {
		n := size / sweepBlock
		grpc := func() (time.Duration, error) { d, _, err := e.transfer(ctx, e.grpc, n, opts.ChunkBytes); return d, err }
		shmc := func() (time.Duration, error) {
			d, _, err := e.transfer(ctx, e.shm, n, opts.SHMChunkBytes)
			return d, err
		}
		tcpc := func() (time.Duration, error) { return tcp.transfer(ctx, src[:size]) }
		memc := func() (time.Duration, error) { return memcpy(memDst[:size], src[:size]), nil }
		ops := []func() (time.Duration, error){grpc, tcpc, shmc, memc}
		if size == 1<<20 {
			ops = append(ops, func() (time.Duration, error) {
				d, _, err := e.transfer(ctx, e.grpcTLS, n, opts.ChunkBytes)
				return d, err
			})
		}
		rounds, err := interleave(ctx, opts, size, ops)
		if err != nil {
			return nil, fmt.Errorf("bench: %d bytes: %w", size, err)
		}
		r := SizeResult{
			Bytes: size, GRPCGbps: medianOf(rounds, 0), TCPGbps: medianOf(rounds, 1),
			SHMGbps: medianOf(rounds, 2), MemcpyGbps: medianOf(rounds, 3),
			GRPCVsTCP: medianRatio(rounds, 0, 1), SHMVsMemcpy: medianRatio(rounds, 2, 3),
		}
		rep.Sizes = append(rep.Sizes, r)
		if size == 1<<20 {
			rep.GRPCGbps, rep.TCPGbps, rep.SHMGbps, rep.MemcpyGbps = r.GRPCGbps, r.TCPGbps, r.SHMGbps, r.MemcpyGbps
			rep.GRPCVsTCP, rep.SHMVsMemcpy = r.GRPCVsTCP, r.SHMVsMemcpy
			rep.GRPCMTLSGbps = medianOf(rounds, 4)
		}
	}
	if err := kv1024(ctx, opts, dir, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// kv1024 times the hand-over of a 1,024-token prompt's KV: 64 blocks of
// each of 30 layers, reservation to claim.
func kv1024(ctx context.Context, opts Options, dir string, rep *Report) error {
	const tokens = 1024
	spec := SmolLM2Spec(2 * tokens / 16)
	n := tokens / spec.BlockSize
	rep.KVTokens, rep.KVBytes = tokens, int64(n)*int64(spec.Layers)*int64(spec.BlockBytes())
	if err := os.Mkdir(dir+"/kv", 0o700); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	e, err := newEndpoint(ctx, spec, dir+"/kv", opts, opts.Logger)
	if err != nil {
		return err
	}
	defer e.close()
	ms := func(conn func() (time.Duration, error)) (float64, error) {
		var runs []float64
		for range opts.Runs {
			d, err := conn()
			if err != nil {
				return 0, err
			}
			runs = append(runs, float64(d)/float64(time.Millisecond))
		}
		slices.Sort(runs)
		return runs[len(runs)/2], nil
	}
	via := func(c func() transport.Conn, chunk int) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			_, total, err := e.transfer(ctx, c(), n, chunk)
			return total, err
		}
	}
	if _, _, err := e.transfer(ctx, e.grpcTLS, n, opts.ChunkBytes); err != nil { // warm up
		return err
	}
	if rep.KV1024TokensMs, err = ms(via(func() transport.Conn { return e.grpcTLS }, opts.ChunkBytes)); err != nil {
		return fmt.Errorf("bench: kv over grpc mtls: %w", err)
	}
	if rep.KV1024PlainMs, err = ms(via(func() transport.Conn { return e.grpc }, opts.ChunkBytes)); err != nil {
		return fmt.Errorf("bench: kv over grpc: %w", err)
	}
	if rep.KV1024SHMMs, err = ms(via(func() transport.Conn { return e.shm }, opts.SHMChunkBytes)); err != nil {
		return fmt.Errorf("bench: kv over shm: %w", err)
	}
	tcp, err := newTCPPair(int(rep.KVBytes))
	if err != nil {
		return err
	}
	defer tcp.close()
	flat := make([]byte, rep.KVBytes)
	for i := range flat { // real bytes: untouched pages would all map the zero page
		flat[i] = byte(i * 7)
	}
	if rep.KV1024TCPMs, err = ms(func() (time.Duration, error) { return tcp.transfer(ctx, flat) }); err != nil {
		return err
	}
	flatDst := make([]byte, rep.KVBytes)
	copy(flatDst, flat) // fault the pages in before timing
	rep.KV1024MemcpyMs, err = ms(func() (time.Duration, error) { return memcpy(flatDst, flat), nil })
	return err
}

func memcpy(dst, src []byte) time.Duration {
	start := time.Now()
	copy(dst, src)
	return time.Since(start)
}

// interleave measures ops in rounds: each round runs every op in turn for
// at least MinTime and records its throughput in GB/s, so a baseline and
// the figure compared with it always share the machine's state of the
// moment (these hosts are noisy). rounds[i][j] is op j in round i.
func interleave(ctx context.Context, opts Options, bytes int, ops []func() (time.Duration, error)) ([][]float64, error) {
	for _, op := range ops { // warm up connections and caches
		if _, err := op(); err != nil {
			return nil, err
		}
	}
	rounds := make([][]float64, opts.Runs)
	for i := range rounds {
		for _, op := range ops {
			var busy time.Duration
			iters := 0
			for start := time.Now(); time.Since(start) < opts.MinTime || iters < 3; iters++ {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				d, err := op()
				if err != nil {
					return nil, err
				}
				busy += d
			}
			rounds[i] = append(rounds[i], float64(bytes)*float64(iters)/busy.Seconds()/1e9)
		}
	}
	return rounds, nil
}

// medianOf is the median over rounds of op j's throughput.
func medianOf(rounds [][]float64, j int) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = r[j]
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// medianRatio is the median over rounds of op a's throughput over op b's
// in the same round.
func medianRatio(rounds [][]float64, a, b int) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = r[a] / r[b]
	}
	slices.Sort(v)
	return v[len(v)/2]
}
