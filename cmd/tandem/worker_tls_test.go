package main

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tandemserve/tandem/transport/transporttest"
)

// With --tls-cert/--tls-key/--tls-ca the Worker service accepts only
// clients holding a certificate of the cluster CA.
func TestWorkerServiceMutualTLS(t *testing.T) {
	pki, err := transporttest.NewPKI(t.TempDir(), "cluster")
	if err != nil {
		t.Fatal(err)
	}
	other, err := transporttest.NewPKI(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	serverID, err := pki.Issue("worker")
	if err != nil {
		t.Fatal(err)
	}
	gatewayID, err := pki.Issue("gateway")
	if err != nil {
		t.Fatal(err)
	}
	strangerID, err := other.Issue("stranger")
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := serveConfig{TLSCert: serverID.CertFile, TLSKey: serverID.KeyFile, TLSCA: serverID.CAFile, Listen: "127.0.0.1:0"}
	opts, err := srvCfg.workerServerOptions(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	dialWith := func(c serveConfig) []grpc.DialOption {
		o, err := c.workerDialOptions()
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	tests := []struct {
		name string
		opts []grpc.DialOption
		ok   bool
	}{
		{"cluster certificate", dialWith(serveConfig{TLSCert: gatewayID.CertFile, TLSKey: gatewayID.KeyFile, TLSCA: gatewayID.CAFile}), true},
		{"plaintext", []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, false},
		{"foreign CA", dialWith(serveConfig{TLSCert: strangerID.CertFile, TLSKey: strangerID.KeyFile, TLSCA: serverID.CAFile}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := grpc.NewClient(lis.Addr().String(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if (err == nil) != tt.ok {
				t.Fatalf("Check: err = %v, want success %v", err, tt.ok)
			}
		})
	}
}

func TestWorkerTLSNeedsAllThreeFiles(t *testing.T) {
	c := serveConfig{TLSCert: "node.pem"}
	if _, err := c.workerDialOptions(); err == nil {
		t.Fatal("a certificate without key and CA was accepted")
	}
	var none serveConfig
	if opts, err := none.workerDialOptions(); err != nil || opts != nil {
		t.Fatalf("no TLS configured: opts %v, err %v; want none", opts, err)
	}
}
