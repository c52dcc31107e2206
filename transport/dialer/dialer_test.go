package dialer_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/dialer"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/shm"
	"github.com/tandemserve/tandem/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDial_PicksBackendPerPeer(t *testing.T) {
	spec := transporttest.Spec()
	mem, err := transport.NewHostMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	rc := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	rc.Secret = transporttest.Secret
	recv, err := transport.NewReceiver(rc, mem, transporttest.NewAllocator(spec.Blocks))
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()

	pki, err := transporttest.NewPKI(t.TempDir(), "ca")
	if err != nil {
		t.Fatal(err)
	}
	gcfg := grpcx.DefaultConfig()
	if gcfg.TLS, err = pki.Issue("decode-1"); err != nil {
		t.Fatal(err)
	}
	gsrv, err := grpcx.NewServer(gcfg, recv)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "s")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "kv.sock")
	ssrv, err := shm.NewServer(shm.DefaultConfig(), recv)
	if err != nil {
		t.Fatal(err)
	}
	ulis, err := shm.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gsrv.Serve(lis) }()
	go func() { defer wg.Done(); _ = ssrv.Serve(ulis) }()
	defer func() { gsrv.Close(); ssrv.Close(); wg.Wait() }()

	local := transporttest.Descriptor("prefill-1", spec)
	cfg := dialer.Config{Local: local, GRPC: grpcx.DefaultConfig(), SHM: shm.DefaultConfig(), Logger: slog.New(slog.DiscardHandler)}
	if cfg.GRPC.TLS, err = pki.Issue("prefill-1"); err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	tests := []struct {
		name string
		peer dialer.Peer
		want dialer.Kind
		err  error
	}{
		{"same host with a socket", dialer.Peer{NodeID: "d", HostID: local.HostID, GRPCAddr: addr, ShmSocket: sock}, dialer.KindSHM, nil},
		{"other host", dialer.Peer{NodeID: "d", HostID: "elsewhere", GRPCAddr: addr, ShmSocket: sock}, dialer.KindGRPC, nil},
		{"same host without a socket", dialer.Peer{NodeID: "d", HostID: local.HostID, GRPCAddr: addr}, dialer.KindGRPC, nil},
		{"stale socket falls back", dialer.Peer{NodeID: "d", HostID: local.HostID, GRPCAddr: addr, ShmSocket: sock + ".gone"}, dialer.KindGRPC, nil},
		{"no address", dialer.Peer{NodeID: "d", HostID: "elsewhere"}, "", dialer.ErrNoRoute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, kind, err := dialer.Dial(context.Background(), cfg, tc.peer)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Dial error = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			defer c.Close()
			if kind != tc.want {
				t.Errorf("kind = %s, want %s", kind, tc.want)
			}
			if c.Peer().NodeID != "decode-1" {
				t.Errorf("peer = %+v", c.Peer())
			}
		})
	}
}
