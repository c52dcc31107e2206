package grpcx_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/transporttest"
	"github.com/tandemserve/tandem/transport/wire"
)

// front serves a node's receiver through a gRPC server of the test's own,
// counting Push calls (one per stream). legacy makes it behave like a
// receiver that predates stream reuse: no reuse header at handshake, and
// every stream ends after its first commit.
type front struct {
	*grpcx.Server
	n      *node
	legacy bool
	pushes atomic.Int32
	addr   string
}

func newFront(t *testing.T, n *node, legacy bool) *front {
	t.Helper()
	cfg := grpcx.DefaultConfig()
	cfg.Logger = logger(t)
	var err error
	if cfg.TLS, err = n.pki.Issue("decode-1"); err != nil {
		t.Fatal(err)
	}
	f := &front{n: n, legacy: legacy}
	if f.Server, err = grpcx.NewServer(cfg, n.recv); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := cfg.TLS.Server()
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpcx.ServerCodec(), grpc.WaitForHandlers(true))
	transportv1.RegisterKVTransportServer(gs, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); wg.Wait(); f.Server.Close() })
	return f
}

func (f *front) Handshake(ctx context.Context, req *transportv1.HandshakeRequest) (*transportv1.HandshakeResponse, error) {
	if !f.legacy {
		return f.Server.Handshake(ctx, req)
	}
	peer, err := wire.FromDescriptor(req.GetSender())
	if err != nil {
		return nil, err
	}
	local, err := f.n.recv.Handshake(peer)
	if err != nil {
		return nil, err
	}
	return &transportv1.HandshakeResponse{Receiver: wire.Descriptor(local)}, nil
}

func (f *front) Push(s transportv1.KVTransport_PushServer) error {
	f.pushes.Add(1)
	if f.legacy {
		s = &oneTransfer{KVTransport_PushServer: s}
	}
	return f.Server.Push(s)
}

// oneTransfer ends its stream once a transfer committed.
type oneTransfer struct {
	transportv1.KVTransport_PushServer
	committed bool
}

func (s *oneTransfer) Send(a *transportv1.Ack) error {
	s.committed = s.committed || a.GetCommitted() != nil
	return s.KVTransport_PushServer.Send(a)
}

func (s *oneTransfer) RecvMsg(m any) error {
	if s.committed {
		return io.EOF
	}
	return s.KVTransport_PushServer.RecvMsg(m)
}

func (f *front) dial(t *testing.T, idle int) *grpcx.Conn {
	t.Helper()
	cfg := f.n.clientConfig("prefill-1")
	cfg.IdleStreams = idle
	c, err := grpcx.Dial(context.Background(), cfg, f.addr, transporttest.Descriptor("prefill-1", transporttest.Spec()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pushAll runs one whole transfer; cancelAfter >= 0 has the receiver's
// owner cancel it after that many layers.
func pushAll(t *testing.T, n *node, conn transport.Conn, src *transport.HostMemory, id string, cancelAfter int) error {
	t.Helper()
	var rel releases
	out, pairs := push(t, n, conn, src, id, 5, &rel)
	ctx := context.Background()
	for l := range transporttest.Spec().Layers {
		if l == cancelAfter {
			n.recv.Cancel(id, "owner gave up")
		}
		if err := out.SendLayer(ctx, l); err != nil {
			return err
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		return err
	}
	blocks, err := n.recv.Ready(ctx, id)
	if err != nil {
		return err
	}
	defer n.alloc.Claim(blocks)
	return transporttest.SameBlocks(src, n.mem, pairs)
}

func TestGRPC_StreamReuse(t *testing.T) {
	tests := []struct {
		name   string
		legacy bool
		idle   int
		fail   map[int]bool // transfers the receiver's owner cancels
		// pushes is how many Push streams the five transfers take.
		pushes int32
	}{
		{name: "back to back on one stream", idle: 4, pushes: 1},
		{name: "no idle streams kept", idle: 0, pushes: 5},
		{name: "receiver without reuse", legacy: true, idle: 4, pushes: 5},
		{name: "failed transfer's stream is dropped", idle: 4, fail: map[int]bool{1: true, 3: true}, pushes: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			f := newFront(t, n, tc.legacy)
			conn := f.dial(t, tc.idle)
			src := source(t)
			for i := range 5 {
				id := string(rune('a' + i))
				cancelAfter := -1
				if tc.fail[i] {
					cancelAfter = 2
				}
				err := pushAll(t, n, conn, src, id, cancelAfter)
				if tc.fail[i] {
					if !errors.Is(err, transport.ErrCancelled) {
						t.Fatalf("transfer %d = %v, want ErrCancelled", i, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("transfer %d: %v", i, err)
				}
			}
			if got := f.pushes.Load(); got != tc.pushes {
				t.Errorf("%d Push streams, want %d", got, tc.pushes)
			}
			if !n.waitFreed() {
				t.Fatalf("receiver blocks not freed: %+v", n.alloc.Stats())
			}
		})
	}
}

func TestGRPC_ConcurrentTransfersShareAConn(t *testing.T) {
	const workers, each = 4, 5
	n := newNode(t)
	f := newFront(t, n, false)
	conn := f.dial(t, workers)
	src := source(t)
	errs := make(chan error, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				errs <- pushAll(t, n, conn, src, string(rune('a'+w))+string(rune('a'+i)), -1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// A stream per concurrent transfer at most: with room for every one
	// of them in the idle list, no stream is ever ended and replaced.
	if got := f.pushes.Load(); got < 1 || got > workers {
		t.Errorf("%d Push streams for %d transfers", got, workers*each)
	}
	if !n.waitFreed() {
		t.Fatalf("receiver blocks not freed: %+v", n.alloc.Stats())
	}
}

func TestGRPC_ClosedConnRefusesTransfers(t *testing.T) {
	n := newNode(t)
	conn := n.dial(context.Background())
	src := source(t)
	if err := pushAll(t, n, conn, src, "before", -1); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	g := n.grant("after")
	_, err := conn.OpenStream(context.Background(), g, []int32{0})
	if !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("OpenStream after Close = %v, want ErrClosed", err)
	}
}
