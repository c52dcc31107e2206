package daemon

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/mtls"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStartWithMutualTLS runs a bootstrap coordinator with certificates and checks that a client
// with a cluster certificate gets status while one with only the CA is refused.
func TestStartWithMutualTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := mtls.WriteTestCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr := freePort(t)
	args := []string{
		"--id", "c0", "--data-dir", filepath.Join(dir, "data"), "--bootstrap",
		"--raft-addr", freePort(t), "--grpc-addr", grpcAddr, "--gossip-addr", freePort(t),
		"--tls-cert", files.CertFile, "--tls-key", files.KeyFile, "--tls-ca", files.CAFile,
	}
	o, err := Parse(args, nil, func(k string) string {
		if k == "TANDEM_CLUSTER_SECRET" {
			return "daemon-test-cluster-secret-0123456789"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Start(ctx, o, discard()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	}()

	withCert, err := mtls.LoadClient(files)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(client.Config{Addrs: []string{grpcAddr}, TLS: withCert})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	for {
		st, err := cl.Status(sctx)
		if err == nil && st.GetLeaderId() == "c0" {
			break
		}
		if sctx.Err() != nil {
			t.Fatalf("no status over mTLS: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	caOnly, err := mtls.LoadClient(mtls.Files{CAFile: files.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := client.New(client.Config{Addrs: []string{grpcAddr}, TLS: caOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bctx, bcancel := context.WithTimeout(ctx, time.Second)
	defer bcancel()
	if _, err := bad.Status(bctx); err == nil {
		t.Fatal("a client without a certificate got status")
	} else if !errors.Is(err, client.ErrUnreachable) && !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("unexpected error kind: %v", err)
	}
}
