package transport_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/inproc"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// rig is a sender and a receiver joined in-process, on a fake clock.
type rig struct {
	t     *testing.T
	spec  kernels.KVSpec
	clock *transporttest.FakeClock
	alloc *transporttest.Allocator
	recv  *transport.Receiver
	src   *transport.HostMemory
	dst   *transport.HostMemory
	conn  *inproc.Conn
}

const ttl = 5 * time.Second

func newRig(t *testing.T, intercept inproc.Interceptor) *rig {
	t.Helper()
	spec := transporttest.Spec()
	rg := &rig{t: t, spec: spec, clock: transporttest.NewFakeClock(), alloc: transporttest.NewAllocator(spec.Blocks)}
	var err error
	if rg.src, err = transport.NewHostMemory(spec); err != nil {
		t.Fatal(err)
	}
	if rg.dst, err = transport.NewHostMemory(spec); err != nil {
		t.Fatal(err)
	}
	transporttest.Fill(rg.src, 1)
	cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	cfg.Secret = transporttest.Secret
	cfg.Clock = rg.clock
	cfg.LeaseTTL = ttl
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	if rg.recv, err = transport.NewReceiver(cfg, rg.dst, rg.alloc); err != nil {
		t.Fatal(err)
	}
	if rg.conn, err = inproc.Dial(transporttest.Descriptor("prefill-1", spec), rg.recv, intercept); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rg.conn.Close()
		rg.recv.Close()
		if st := rg.alloc.Stats(); len(st.Errors) > 0 {
			t.Errorf("allocator errors: %v", st.Errors)
		}
	})
	return rg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (rg *rig) grant(id string, epoch uint64) transport.Grant {
	return transporttest.Grant(rg.t, id, epoch, "decode-1", rg.clock.Now())
}

// releases records a plan's Release calls.
type releases struct {
	mu   sync.Mutex
	errs []error
}

func (r *releases) release(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *releases) once(t *testing.T) error {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) != 1 {
		t.Fatalf("Release ran %d times, want exactly once", len(r.errs))
	}
	return r.errs[0]
}

// start reserves n blocks and opens a push of source blocks 0..n-1.
func (rg *rig) start(id string, n, chunk int, rel *releases) (transport.Lease, *transport.Outbound, []transport.BlockPair, error) {
	ctx := context.Background()
	g := rg.grant(id, 1)
	lease, err := rg.conn.Reserve(ctx, g, n)
	if err != nil {
		return transport.Lease{}, nil, nil, fmt.Errorf("reserve: %w", err)
	}
	pairs := make([]transport.BlockPair, n)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: lease.Blocks[i]}
	}
	out, err := transport.Push(ctx, rg.conn, rg.src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: chunk, Release: rel.release})
	return lease, out, pairs, err
}

// sendAll pushes every layer and commits.
func sendAll(ctx context.Context, out *transport.Outbound, layers int) ([]int32, error) {
	for l := range layers {
		if err := out.SendLayer(ctx, l); err != nil {
			return nil, err
		}
	}
	return out.Commit(ctx)
}
