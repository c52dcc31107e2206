package grpcx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Server exposes a Receiver as the KVTransport gRPC service.
type Server struct {
	transportv1.UnimplementedKVTransportServer
	cfg  Config
	recv *transport.Receiver
	grpc *grpc.Server

	scratch sync.Pool // of *[]byte: transfers' receive buffers

	mu      sync.Mutex
	serving bool
	done    chan struct{}
}

// NewServer builds the service; it refuses to run without TLS unless
// cfg.Insecure is set.
func NewServer(cfg Config, recv *transport.Receiver) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.maxMsg()),
		grpc.InitialWindowSize(cfg.StreamWindow),
		grpc.InitialConnWindowSize(cfg.ConnWindow),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(64 << 10),
		grpc.ForceServerCodecV2(newCodec()),
		// Close joins every handler: each is a goroutine this server owns.
		grpc.WaitForHandlers(true),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.Keepalive, Timeout: cfg.Keepalive}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.Keepalive / 2, PermitWithoutStream: true}),
	}
	if !cfg.Insecure {
		tlsCfg, err := cfg.TLS.Server()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(batchedTLS{credentials.NewTLS(tlsCfg)}))
	}
	s := &Server{cfg: cfg, recv: recv, grpc: grpc.NewServer(opts...), done: make(chan struct{})}
	transportv1.RegisterKVTransportServer(s.grpc, s)
	return s, nil
}

// Serve accepts connections on lis until Close; it returns nil after Close.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return fmt.Errorf("%w: grpcx: Serve called twice", transport.ErrInvalid)
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.done)
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpcx: serve: %w", err)
	}
	return nil
}

// Close stops the server at once: open streams break, and their transfers
// fail and free their blocks. It returns after every handler has returned.
func (s *Server) Close() error {
	s.grpc.Stop()
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.done
	}
	return nil
}

// Handshake checks the sender's descriptor against ours, and tells the
// sender in a header that Push streams here carry transfers back to back.
func (s *Server) Handshake(ctx context.Context, req *transportv1.HandshakeRequest) (*transportv1.HandshakeResponse, error) {
	peer, err := wire.FromDescriptor(req.GetSender())
	if err != nil {
		return nil, toStatus(err)
	}
	local, err := s.recv.Handshake(peer)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := grpc.SetHeader(ctx, metadata.Pairs(pipesHeader, pipesReuse)); err != nil {
		return nil, toStatus(fmt.Errorf("grpcx: handshake header: %w", err))
	}
	return &transportv1.HandshakeResponse{Receiver: wire.Descriptor(local)}, nil
}

// Reserve leases destination blocks.
func (s *Server) Reserve(ctx context.Context, req *transportv1.ReserveRequest) (*transportv1.ReserveResponse, error) {
	g, err := wire.FromGrant(req.GetGrant())
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := wire.Blocks(req.GetBlocks())
	if err != nil {
		return nil, toStatus(err)
	}
	l, err := s.recv.Reserve(ctx, g, n)
	if err != nil {
		return nil, toStatus(err)
	}
	return &transportv1.ReserveResponse{Blocks: l.Blocks, LeaseExpiryUnixNano: l.Expiry.UnixNano()}, nil
}

// Cancel ends a transfer on the sender's behalf.
func (s *Server) Cancel(_ context.Context, req *transportv1.CancelRequest) (*transportv1.CancelResponse, error) {
	g, err := wire.FromGrant(req.GetGrant())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.recv.CancelGrant(g, req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	return &transportv1.CancelResponse{}, nil
}

// Push receives transfers one after another on one stream. Each starts
// with its Open (seq 1), whose grant is checked before any byte is
// written, and ends at its commit; the sender may then half-close or start
// the next transfer. A failed transfer ends the stream with its status.
func (s *Server) Push(stream transportv1.KVTransport_PushServer) error {
	f := new(inFrame)
	for first := true; ; first = false {
		if err := stream.RecvMsg(f); err != nil {
			if !first && errors.Is(err, io.EOF) {
				return nil // the sender is done with an idle stream
			}
			if errors.Is(err, transport.ErrProtocol) {
				return toStatus(err)
			}
			return toStatus(fmt.Errorf("%w: stream ended before open: %w", transport.ErrProtocol, err))
		}
		if err := s.transfer(stream, f); err != nil {
			return err
		}
	}
}

// transfer runs one transfer whose first frame is in f.
func (s *Server) transfer(stream transportv1.KVTransport_PushServer, f *inFrame) error {
	open := f.msg.GetOpen()
	if f.chunk || open == nil || f.seq != 1 {
		return toStatus(fmt.Errorf("%w: first frame must be open with seq 1", transport.ErrProtocol))
	}
	g, err := wire.FromGrant(open.GetGrant())
	if err != nil {
		return toStatus(err)
	}
	in, err := s.recv.Open(g, open.GetDstBlocks(), 1)
	if err != nil {
		return toStatus(err)
	}
	// A transfer's chunks are read into a buffer borrowed from the server
	// for the transfer's length, so chunk-sized buffers are not allocated
	// per transfer, nor held by streams idle between transfers.
	if b, ok := s.scratch.Get().(*[]byte); ok {
		f.scratch = *b
	}
	defer func() {
		b := f.scratch
		s.scratch.Put(&b)
		f.scratch = nil
	}()
	if err := s.pump(stream, in, f); err != nil {
		in.Abort(err)
		s.cfg.Logger.Debug("push stream failed", "transfer", in.TransferID(), "err", err)
		return toStatus(err)
	}
	return nil
}

// pump applies frames until the commit.
func (s *Server) pump(stream transportv1.KVTransport_PushServer, in *transport.Inbound, f *inFrame) error {
	for {
		if err := stream.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: sender closed the stream before commit", transport.ErrPeerLost)
			}
			if errors.Is(err, transport.ErrProtocol) {
				return err
			}
			return fmt.Errorf("%w: %w", transport.ErrPeerLost, err)
		}
		if f.chunk {
			layer, err := wire.Layer(f.layer)
			if err != nil {
				return err
			}
			if err := in.Chunk(f.seq, layer, f.offset, f.data, f.crc); err != nil {
				return err
			}
			continue
		}
		var ack *transportv1.Ack
		switch k := f.msg.GetKind().(type) {
		case *transportv1.Frame_LayerEnd:
			layer, err := wire.Layer(k.LayerEnd.GetLayer())
			if err != nil {
				return err
			}
			if err := in.LayerEnd(f.seq, layer); err != nil {
				return err
			}
			ack = &transportv1.Ack{Kind: &transportv1.Ack_LayerDone{LayerDone: &transportv1.LayerDone{Layer: k.LayerEnd.GetLayer()}}}
		case *transportv1.Frame_Commit:
			blocks, err := in.Commit(f.seq)
			if err != nil {
				return err
			}
			ack := &transportv1.Ack{Kind: &transportv1.Ack_Committed{Committed: &transportv1.Committed{Blocks: blocks}}}
			if err := stream.Send(ack); err != nil {
				return fmt.Errorf("%w: sending commit: %w", transport.ErrPeerLost, err)
			}
			return nil
		default:
			return fmt.Errorf("%w: unexpected frame %T", transport.ErrProtocol, k)
		}
		if err := stream.Send(ack); err != nil {
			return fmt.Errorf("%w: %w", transport.ErrPeerLost, err)
		}
	}
}
