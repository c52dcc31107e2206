package bench

import (
	"context"
	"testing"

	"github.com/tandemserve/tandem/transport"
)

// BenchmarkTransfer1MiB moves 1 MiB (64 blocks of 16 KiB) per operation
// through each backend: go test -run '^$' -bench Transfer1MiB ./transport/bench
// (add -cpuprofile to see where a transfer's time goes).
func BenchmarkTransfer1MiB(b *testing.B) {
	o := DefaultOptions()
	e, err := newEndpoint(context.Background(), sweepSpec(1<<20), b.TempDir(), o, o.Logger)
	if err != nil {
		b.Fatal(err)
	}
	defer e.close()
	for _, tc := range []struct {
		name  string
		chunk int
		conn  func() transport.Conn
	}{
		{"grpc", o.ChunkBytes, func() transport.Conn { return e.grpc }},
		{"grpc-mtls", o.ChunkBytes, func() transport.Conn { return e.grpcTLS }},
		{"shm", o.SHMChunkBytes, func() transport.Conn { return e.shm }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				if _, _, err := e.transfer(context.Background(), tc.conn(), (1<<20)/sweepBlock, tc.chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
