package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/shm"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// endpoint is a receiver served by every backend on loopback, and a sender
// connected to each: the two halves run in one process, so the figures
// include both sides' CPU on the same cores.
type endpoint struct {
	spec   kernels.KVSpec
	secret []byte
	src    *transport.HostMemory
	alloc  *pool
	recv   *transport.Receiver
	closer []func()
	wg     sync.WaitGroup
	seq    int

	grpc, grpcTLS, shm transport.Conn
}

const decodeNode = "bench-decode"

func newEndpoint(ctx context.Context, spec kernels.KVSpec, dir string, opts Options, log *slog.Logger) (e *endpoint, err error) {
	e = &endpoint{spec: spec, secret: make([]byte, 32), alloc: newPool(spec.Blocks)}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if _, err := rand.Read(e.secret); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if e.src, err = transport.NewHostMemory(spec); err != nil {
		return nil, err
	}
	for l := range spec.Layers {
		region, _ := e.src.Region(l)
		for i := range region {
			region[i] = byte(i * 7)
		}
	}
	// The receiver's KV memory lives in a memfd, as the CPU backend's KV
	// cache does, so the shared-memory sender writes it in place.
	dst, err := shm.NewMemory(spec)
	if err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() { dst.Close() })
	fence, err := shm.NewFence(spec.Blocks)
	if err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() { fence.Close() })
	rc := transport.DefaultReceiverConfig(descriptor(decodeNode, spec))
	rc.Secret, rc.Logger, rc.Fence = e.secret, log, fence
	if e.recv, err = transport.NewReceiver(rc, dst, e.alloc); err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() { e.recv.Close() })
	local := descriptor("bench-prefill", spec)

	// gRPC, plaintext: the same bytes on the same loopback as the TCP baseline.
	plain := grpcx.DefaultConfig()
	plain.Insecure, plain.Logger, plain.MaxChunkBytes = true, log, opts.ChunkBytes
	if e.grpc, err = e.serveGRPC(ctx, plain, plain, local); err != nil {
		return nil, err
	}
	// gRPC over mutual TLS, as deployed.
	pki, err := transporttest.NewPKI(dir, "bench")
	if err != nil {
		return nil, err
	}
	srvTLS, cliTLS := plain, plain
	srvTLS.Insecure, cliTLS.Insecure = false, false
	if srvTLS.TLS, err = pki.Issue(decodeNode); err != nil {
		return nil, err
	}
	if cliTLS.TLS, err = pki.Issue("bench-prefill"); err != nil {
		return nil, err
	}
	if e.grpcTLS, err = e.serveGRPC(ctx, srvTLS, cliTLS, local); err != nil {
		return nil, err
	}
	// Shared memory.
	scfg := shm.DefaultConfig()
	scfg.Logger, scfg.SlotBytes, scfg.Slots = log, opts.SHMChunkBytes, 8
	sdir := filepath.Join(dir, "shm")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	ssrv, err := shm.NewServer(scfg, e.recv)
	if err != nil {
		return nil, err
	}
	ulis, err := shm.Listen(filepath.Join(sdir, "kv.sock"))
	if err != nil {
		return nil, err
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = ssrv.Serve(ulis) }()
	e.closer = append(e.closer, func() { ssrv.Close() })
	if e.shm, err = shm.Dial(ctx, scfg, filepath.Join(sdir, "kv.sock"), local); err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() { e.shm.Close() })
	return e, nil
}

func (e *endpoint) serveGRPC(ctx context.Context, srvCfg, cliCfg grpcx.Config, local transport.Descriptor) (transport.Conn, error) {
	srv, err := grpcx.NewServer(srvCfg, e.recv)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e.wg.Add(1)
	go func() { defer e.wg.Done(); _ = srv.Serve(lis) }()
	e.closer = append(e.closer, func() { srv.Close() })
	c, err := grpcx.Dial(ctx, cliCfg, lis.Addr().String(), local)
	if err != nil {
		return nil, err
	}
	e.closer = append(e.closer, func() { c.Close() })
	return c, nil
}

// close tears down in reverse order and joins the servers.
func (e *endpoint) close() {
	for i := len(e.closer) - 1; i >= 0; i-- {
		e.closer[i]()
	}
	e.wg.Wait()
}

func descriptor(node string, spec kernels.KVSpec) transport.Descriptor {
	return transport.Descriptor{NodeID: node, ModelID: "SmolLM2-135M-Instruct", Spec: spec, Layout: transport.LayoutKThenV, HostID: transport.LocalHostID()}
}

// transfer moves blocks 0..n-1 of every layer through conn. push is the
// data path (open, every layer, commit acknowledged); total adds the
// reservation and the owner's claim: the whole hand-over.
func (e *endpoint) transfer(ctx context.Context, conn transport.Conn, n, chunk int) (push, total time.Duration, err error) {
	e.seq++
	start := time.Now()
	g, err := transport.IssueGrant(e.secret, fmt.Sprint("bench-", e.seq), 1, decodeNode, start.Add(time.Minute))
	if err != nil {
		return 0, 0, err
	}
	lease, err := conn.Reserve(ctx, g, n)
	if err != nil {
		return 0, 0, err
	}
	pairs := make([]transport.BlockPair, n)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: lease.Blocks[i]}
	}
	pushStart := time.Now()
	out, err := transport.Push(ctx, conn, e.src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: chunk})
	if err != nil {
		return 0, 0, err
	}
	for l := range e.spec.Layers {
		if err := out.SendLayer(ctx, l); err != nil {
			return 0, 0, err
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		return 0, 0, err
	}
	push = time.Since(pushStart)
	blocks, err := e.recv.Ready(ctx, g.TransferID)
	if err != nil {
		return 0, 0, err
	}
	total = time.Since(start)
	e.alloc.Free(blocks)
	return push, total, nil
}
