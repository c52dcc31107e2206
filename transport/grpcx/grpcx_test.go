package grpcx_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/transporttest"
)

type releases struct {
	mu   sync.Mutex
	errs []error
}

func (r *releases) release(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *releases) check(t *testing.T, want error) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) != 1 {
		t.Fatalf("Release ran %d times, want once", len(r.errs))
	}
	if (want == nil) != (r.errs[0] == nil) || (want != nil && !errors.Is(r.errs[0], want)) {
		t.Fatalf("Release(%v), want %v", r.errs[0], want)
	}
}

// push reserves n blocks on conn and opens a push from src blocks 0..n-1.
func push(t *testing.T, n *node, conn transport.Conn, src transport.Memory, id string, blocks int, rel *releases) (*transport.Outbound, []transport.BlockPair) {
	t.Helper()
	ctx := context.Background()
	g := n.grant(id)
	lease, err := conn.Reserve(ctx, g, blocks)
	if err != nil {
		t.Fatal(err)
	}
	pairs := make([]transport.BlockPair, blocks)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: lease.Blocks[i]}
	}
	out, err := transport.Push(ctx, conn, src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 1000, Release: rel.release})
	if err != nil {
		t.Fatal(err)
	}
	return out, pairs
}

func source(t *testing.T) *transport.HostMemory {
	m, err := transport.NewHostMemory(transporttest.Spec())
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Fill(m, 3)
	return m
}

func TestGRPC_RoundTripOverMutualTLS(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	conn := n.dial(ctx)
	src := source(t)
	var rel releases
	out, pairs := push(t, n, conn, src, "rt", 6, &rel)
	for l := range transporttest.Spec().Layers {
		if err := out.SendLayer(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rel.check(t, nil)
	blocks, err := n.recv.Ready(ctx, "rt")
	if err != nil {
		t.Fatal(err)
	}
	if err := transporttest.SameBlocks(src, n.mem, pairs); err != nil {
		t.Error(err)
	}
	n.alloc.Claim(blocks)
}

// deviceMemory hides Region, so the sender gathers each chunk into a fresh
// buffer that the copy-free codec then hands to gRPC.
type deviceMemory struct{ *transport.HostMemory }

func (deviceMemory) Region(int) ([]byte, bool) { return nil, false }

func TestGRPC_RoundTripFromDeviceMemory(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	conn := n.dial(ctx)
	src := source(t)
	var rel releases
	out, pairs := push(t, n, conn, deviceMemory{src}, "dev", 9, &rel)
	for l := range transporttest.Spec().Layers {
		if err := out.SendLayer(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	blocks, err := n.recv.Ready(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if err := transporttest.SameBlocks(src, n.mem, pairs); err != nil {
		t.Error(err)
	}
	n.alloc.Claim(blocks)
}

func TestGRPC_RefusesUnauthenticatedPeers(t *testing.T) {
	n := newNode(t)
	other, err := transporttest.NewPKI(t.TempDir(), "rogue")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := other.Issue("prefill-1")
	if err != nil {
		t.Fatal(err)
	}
	good := n.clientConfig("prefill-1")
	noCert := good
	noCert.TLS.CertFile, noCert.TLS.KeyFile = rogue.CertFile, rogue.KeyFile // signed by another CA
	plain := grpcx.DefaultConfig()
	plain.Insecure = true
	tests := []struct {
		name string
		cfg  grpcx.Config
	}{
		{"client certificate from another CA", noCert},
		{"plaintext client", plain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := grpcx.Dial(ctx, tc.cfg, n.addr, transporttest.Descriptor("prefill-1", transporttest.Spec()))
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded without a valid client certificate")
			}
		})
	}
	t.Run("server without TLS", func(t *testing.T) {
		cfg := grpcx.DefaultConfig()
		if _, err := grpcx.NewServer(cfg, n.recv); err == nil || !strings.Contains(err.Error(), "TLS is required") {
			t.Fatalf("NewServer without TLS = %v, want refusal", err)
		}
	})
}

func TestGRPC_HandshakeNamesMismatch(t *testing.T) {
	n := newNode(t)
	spec := transporttest.Spec()
	spec.HeadDim = 64
	_, err := grpcx.Dial(context.Background(), n.clientConfig("prefill-1"), n.addr, transporttest.Descriptor("prefill-1", spec))
	if !errors.Is(err, transport.ErrIncompatible) || !strings.Contains(err.Error(), "head dim") {
		t.Fatalf("Dial = %v, want ErrIncompatible naming head dim", err)
	}
}

func TestGRPC_Failures(t *testing.T) {
	tests := []struct {
		name string
		act  func(t *testing.T, n *node, conn *grpcx.Conn, out *transport.Outbound) error
		want error
	}{
		{
			name: "receiver killed mid-transfer",
			act: func(t *testing.T, n *node, _ *grpcx.Conn, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				n.waitData(t, "f") // the receiver is streaming: it must notice at once
				n.kill()
				return sendRest(out, 1)
			},
			want: transport.ErrPeerLost,
		},
		{
			name: "connection cut by the sender",
			act: func(t *testing.T, n *node, conn *grpcx.Conn, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				n.waitData(t, "f") // the receiver is streaming: it must notice at once
				conn.Close()
				return sendRest(out, 1)
			},
			want: transport.ErrPeerLost,
		},
		{
			name: "late chunk after lease expiry",
			act: func(t *testing.T, n *node, _ *grpcx.Conn, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				n.waitBytes(t, "f", uint64(4*transporttest.Spec().BlockBytes()))
				n.clock.Advance(ttl + time.Millisecond)
				if !n.waitFreed() {
					t.Fatal("expired lease not freed")
				}
				return sendRest(out, 1)
			},
			want: transport.ErrLeaseExpired,
		},
		{
			name: "sender deadline",
			act: func(t *testing.T, n *node, _ *grpcx.Conn, out *transport.Outbound) error {
				ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
				defer cancel()
				<-ctx.Done()
				return out.SendLayer(ctx, 0)
			},
			want: transport.ErrTimeout,
		},
		{
			name: "owner cancels at the receiver",
			act: func(t *testing.T, n *node, _ *grpcx.Conn, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				n.recv.Cancel("f", "client went away")
				return sendRest(out, 1)
			},
			want: transport.ErrCancelled,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			conn := n.dial(context.Background())
			var rel releases
			out, _ := push(t, n, conn, source(t), "f", 4, &rel)
			if err := tc.act(t, n, conn, out); !errors.Is(err, tc.want) {
				t.Fatalf("sender error = %v, want %v", err, tc.want)
			}
			rel.check(t, tc.want)
			if !n.waitFreed() {
				t.Fatalf("receiver blocks not freed: %+v", n.alloc.Stats())
			}
			if st := n.alloc.Stats(); st.Frees != 1 {
				t.Errorf("blocks freed %d times, want once", st.Frees)
			}
		})
	}
}

// sendRest sends layers from..end and commits.
func sendRest(out *transport.Outbound, from int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for l := from; l < transporttest.Spec().Layers; l++ {
		if err := out.SendLayer(ctx, l); err != nil {
			return err
		}
	}
	_, err := out.Commit(ctx)
	return err
}

// silentServer accepts everything and never acknowledges: the commit's
// answer is lost, and the sender must not wait forever.
type silentServer struct {
	transportv1.UnimplementedKVTransportServer
	local transport.Descriptor
}

func (s silentServer) Handshake(context.Context, *transportv1.HandshakeRequest) (*transportv1.HandshakeResponse, error) {
	return &transportv1.HandshakeResponse{Receiver: descriptorProto(s.local)}, nil
}

func (s silentServer) Reserve(context.Context, *transportv1.ReserveRequest) (*transportv1.ReserveResponse, error) {
	return &transportv1.ReserveResponse{Blocks: []int32{0, 1}}, nil
}

func (s silentServer) Push(stream transportv1.KVTransport_PushServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}

func TestGRPC_LostCompletionTimesOut(t *testing.T) {
	n := newNode(t) // only for its PKI
	srvCfg, err := n.pki.Issue("decode-2")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := srvCfg.Server()
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	transportv1.RegisterKVTransportServer(gs, silentServer{local: transporttest.Descriptor("decode-2", transporttest.Spec())})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); wg.Wait() }()

	conn, err := grpcx.Dial(context.Background(), n.clientConfig("prefill-1"), lis.Addr().String(), transporttest.Descriptor("prefill-1", transporttest.Spec()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rel releases
	out, _ := push(t, n, conn, source(t), "lost", 2, &rel)
	ctx := context.Background()
	for l := range transporttest.Spec().Layers {
		if err := out.SendLayer(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := out.Commit(wait); !errors.Is(err, transport.ErrTimeout) {
		t.Fatalf("Commit = %v, want ErrTimeout", err)
	}
	rel.check(t, transport.ErrTimeout)
}
