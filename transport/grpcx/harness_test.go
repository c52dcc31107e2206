package grpcx_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/transporttest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChildSender(spec))
	}
	goleak.VerifyTestMain(m)
}

const ttl = 5 * time.Second

// node is a receiver served over gRPC on loopback with mutual TLS.
type node struct {
	t     *testing.T
	pki   *transporttest.PKI
	clock *transporttest.FakeClock
	alloc *transporttest.Allocator
	recv  *transport.Receiver
	mem   *transport.HostMemory
	srv   *grpcx.Server
	addr  string
	wg    sync.WaitGroup
	once  sync.Once
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func newNode(t *testing.T) *node {
	t.Helper()
	pki, err := transporttest.NewPKI(t.TempDir(), "cluster")
	if err != nil {
		t.Fatal(err)
	}
	spec := transporttest.Spec()
	n := &node{t: t, pki: pki, clock: transporttest.NewFakeClock(), alloc: transporttest.NewAllocator(spec.Blocks)}
	if n.mem, err = transport.NewHostMemory(spec); err != nil {
		t.Fatal(err)
	}
	rc := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	rc.Secret, rc.Clock, rc.LeaseTTL, rc.Logger = transporttest.Secret, n.clock, ttl, logger(t)
	if n.recv, err = transport.NewReceiver(rc, n.mem, n.alloc); err != nil {
		t.Fatal(err)
	}
	cfg := grpcx.DefaultConfig()
	cfg.Logger = logger(t)
	if cfg.TLS, err = pki.Issue("decode-1"); err != nil {
		t.Fatal(err)
	}
	if n.srv, err = grpcx.NewServer(cfg, n.recv); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		n.kill()
		n.recv.Close()
		if st := n.alloc.Stats(); len(st.Errors) > 0 || st.InUse != 0 {
			t.Errorf("receiver blocks leaked or double freed: %+v", st)
		}
	})
	return n
}

// kill stops the server abruptly, as if the process died.
func (n *node) kill() {
	n.once.Do(func() {
		n.srv.Close()
		n.wg.Wait()
	})
}

func (n *node) clientConfig(node string) grpcx.Config {
	n.t.Helper()
	cfg := grpcx.DefaultConfig()
	cfg.Logger = logger(n.t)
	var err error
	if cfg.TLS, err = n.pki.Issue(node); err != nil {
		n.t.Fatal(err)
	}
	return cfg
}

func (n *node) dial(ctx context.Context) *grpcx.Conn {
	n.t.Helper()
	c, err := grpcx.Dial(ctx, n.clientConfig("prefill-1"), n.addr, transporttest.Descriptor("prefill-1", transporttest.Spec()))
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

func (n *node) grant(id string) transport.Grant {
	return transporttest.Grant(n.t, id, 1, "decode-1", n.clock.Now())
}

// waitFreed waits until the receiver holds no blocks.
func (n *node) waitFreed() bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n.alloc.Stats().InUse == 0 && n.recv.Active() == 0 {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// waitData waits until some payload of transfer id has landed.
func (n *node) waitData(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := n.recv.Stat(id); ok && st.Bytes > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no data of transfer %q arrived", id)
}

// waitBytes waits until n payload bytes of transfer id have landed, so a
// later clock advance cannot race their lease renewals.
func (n *node) waitBytes(t *testing.T, id string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := n.recv.Stat(id); ok && st.Bytes >= want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d bytes of %q did not arrive", want, id)
}
