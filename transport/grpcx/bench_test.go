package grpcx_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// benchBlock is the block size of the benchmark's cache: one layer of
// 16 KiB blocks, as in transport/bench's size sweep.
const benchBlock = 16 << 10

// benchEnd is a receiver served on loopback and a sender dialled to it.
type benchEnd struct {
	src   *transport.HostMemory
	recv  *transport.Receiver
	alloc *transporttest.Allocator
	conn  *grpcx.Conn
	seq   int
}

func newBenchEnd(b *testing.B, maxBytes int, tls bool) *benchEnd {
	b.Helper()
	spec := kernels.KVSpec{Layers: 1, Blocks: 2 * maxBytes / benchBlock, BlockSize: 16, KVHeads: 4, HeadDim: 64, DType: kernels.KVF16}
	e := &benchEnd{alloc: transporttest.NewAllocator(spec.Blocks)}
	var err error
	if e.src, err = transport.NewHostMemory(spec); err != nil {
		b.Fatal(err)
	}
	transporttest.Fill(e.src, 1)
	dst, err := transport.NewHostMemory(spec)
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	rc := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	rc.Secret, rc.Logger = transporttest.Secret, quiet
	if e.recv, err = transport.NewReceiver(rc, dst, e.alloc); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.recv.Close() })
	srvCfg, cliCfg := grpcx.DefaultConfig(), grpcx.DefaultConfig()
	srvCfg.Logger, cliCfg.Logger = quiet, quiet
	if tls {
		pki, err := transporttest.NewPKI(b.TempDir(), "bench")
		if err != nil {
			b.Fatal(err)
		}
		if srvCfg.TLS, err = pki.Issue("decode-1"); err != nil {
			b.Fatal(err)
		}
		if cliCfg.TLS, err = pki.Issue("prefill-1"); err != nil {
			b.Fatal(err)
		}
	} else {
		srvCfg.Insecure, cliCfg.Insecure = true, true
	}
	srv, err := grpcx.NewServer(srvCfg, e.recv)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(lis) }()
	b.Cleanup(func() { srv.Close(); wg.Wait() })
	if e.conn, err = grpcx.Dial(context.Background(), cliCfg, lis.Addr().String(), transporttest.Descriptor("prefill-1", spec)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.conn.Close() })
	return e
}

// transfer moves bytes from the source's first blocks and returns the push
// time: open, every chunk, commit acknowledged (reservation and claim
// excluded, as in transport/bench).
func (e *benchEnd) transfer(ctx context.Context, bytes int) (time.Duration, error) {
	e.seq++
	g, err := transport.IssueGrant(transporttest.Secret, fmt.Sprint("bench-", e.seq), 1, "decode-1", time.Now().Add(time.Hour))
	if err != nil {
		return 0, err
	}
	n := bytes / benchBlock
	lease, err := e.conn.Reserve(ctx, g, n)
	if err != nil {
		return 0, err
	}
	pairs := make([]transport.BlockPair, n)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: lease.Blocks[i]}
	}
	start := time.Now()
	out, err := transport.Push(ctx, e.conn, e.src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 1 << 20})
	if err != nil {
		return 0, err
	}
	if err := out.SendLayer(ctx, 0); err != nil {
		return 0, err
	}
	if _, err := out.Commit(ctx); err != nil {
		return 0, err
	}
	push := time.Since(start)
	blocks, err := e.recv.Ready(ctx, g.TransferID)
	if err != nil {
		return 0, err
	}
	e.alloc.Claim(blocks)
	return push, nil
}

// BenchmarkPush pushes one transfer at a time over loopback, plaintext and
// over mutual TLS, at the transport/bench sizes. push-ns/op and push-MB/s
// time the push alone:
//
//	go test -run '^$' -bench Push ./transport/grpcx
func BenchmarkPush(b *testing.B) {
	sizes := []int{16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20}
	for _, tls := range []bool{false, true} {
		name := "plain"
		if tls {
			name = "mtls"
		}
		b.Run(name, func(b *testing.B) {
			e := newBenchEnd(b, sizes[len(sizes)-1], tls)
			for _, size := range sizes {
				b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
					ctx := context.Background()
					var push time.Duration
					for b.Loop() {
						d, err := e.transfer(ctx, size)
						if err != nil {
							b.Fatal(err)
						}
						push += d
					}
					b.ReportMetric(float64(push.Nanoseconds())/float64(b.N), "push-ns/op")
					b.ReportMetric(float64(size)*float64(b.N)/push.Seconds()/1e6, "push-MB/s")
				})
			}
		})
	}
}
