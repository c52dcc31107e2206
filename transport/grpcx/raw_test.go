package grpcx_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// rawClient speaks the protocol frame by frame, to send what a correct
// sender never would.
func rawClient(t *testing.T, n *node) transportv1.KVTransportClient {
	t.Helper()
	tlsCfg, err := n.clientConfig("prefill-1").TLS.Client()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return transportv1.NewKVTransportClient(cc)
}

func chunk(seq uint64, layer uint32, off uint64, data []byte, crc uint32) *transportv1.Frame {
	return &transportv1.Frame{Seq: seq, Kind: &transportv1.Frame_Chunk{Chunk: &transportv1.Chunk{Layer: layer, Offset: off, Data: data, Crc32C: crc}}}
}

func TestGRPC_RawFramesRefused(t *testing.T) {
	data := make([]byte, 512)
	for i := range data {
		data[i] = byte(i)
	}
	sum := transport.Checksum(data)
	tests := []struct {
		name   string
		frames func(open *transportv1.Frame) []*transportv1.Frame
		reason string
	}{
		{"checksum mismatch", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, chunk(2, 0, 0, data, sum^1)}
		}, "CHECKSUM"},
		{"duplicate frame", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, chunk(2, 0, 0, data, sum), chunk(2, 0, 0, data, sum)}
		}, "DUPLICATE_CHUNK"},
		{"replayed chunk with a fresh seq", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, chunk(2, 0, 0, data, sum), chunk(3, 0, 0, data, sum)}
		}, "DUPLICATE_CHUNK"},
		{"gap in payload", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, chunk(2, 0, 1024, data, sum)}
		}, "PROTOCOL"},
		{"layer out of range", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, chunk(2, 1<<31, 0, data, sum)}
		}, "PROTOCOL"},
		{"chunk before open", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{chunk(1, 0, 0, data, sum)}
		}, "PROTOCOL"},
		{"forged token", func(o *transportv1.Frame) []*transportv1.Frame {
			forged := append([]byte(nil), o.GetOpen().GetGrant().GetToken()...)
			forged[0] ^= 1
			o.GetOpen().GetGrant().Token = forged
			return []*transportv1.Frame{o}
		}, "UNAUTHENTICATED"},
		{"commit before layers", func(o *transportv1.Frame) []*transportv1.Frame {
			return []*transportv1.Frame{o, {Seq: 2, Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}}}
		}, "PROTOCOL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			ctx := context.Background()
			client := rawClient(t, n)
			g := n.grant("raw")
			lease, err := client.Reserve(ctx, &transportv1.ReserveRequest{Grant: wire.Grant(g), Blocks: 2})
			if err != nil {
				t.Fatal(err)
			}
			open := &transportv1.Frame{Seq: 1, Kind: &transportv1.Frame_Open{Open: &transportv1.Open{Grant: wire.Grant(g), DstBlocks: lease.GetBlocks()}}}
			stream, err := client.Push(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.frames(open) {
				if err := stream.Send(f); err != nil {
					break // the receiver already ended the stream
				}
			}
			_, err = stream.Recv()
			if got := reasonOf(err); got != tc.reason {
				t.Fatalf("stream ended with %v (reason %q), want reason %q", err, got, tc.reason)
			}
			if tc.reason == "UNAUTHENTICATED" || (tc.reason == "PROTOCOL" && tc.name == "chunk before open") {
				// Refused before the lease was touched: it lives until cancelled.
				if _, err := client.Cancel(ctx, &transportv1.CancelRequest{Grant: wire.Grant(g), Reason: "test"}); err != nil {
					t.Fatal(err)
				}
			}
			if !n.waitFreed() {
				t.Fatalf("blocks not freed: %+v", n.alloc.Stats())
			}
		})
	}
}

func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok || errors.Is(err, context.Canceled) {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
