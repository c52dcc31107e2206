package grpcx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Conn is a sender's gRPC connection to one receiver.
type Conn struct {
	cfg    Config
	cc     *grpc.ClientConn
	client transportv1.KVTransportClient
	peer   transport.Descriptor
}

var (
	_ transport.Conn   = (*Conn)(nil)
	_ transport.Stream = (*stream)(nil)
)

// Dial connects to the receiver at addr and handshakes with local; it fails
// with transport.ErrIncompatible naming the mismatch when the peers' KV
// layouts differ.
func Dial(ctx context.Context, cfg Config, addr string, local transport.Descriptor) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := local.Validate(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if !cfg.Insecure {
		tlsCfg, err := cfg.TLS.Client()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithInitialWindowSize(cfg.StreamWindow),
		grpc.WithInitialConnWindowSize(cfg.ConnWindow),
		grpc.WithWriteBufferSize(256<<10),
		grpc.WithReadBufferSize(64<<10),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.Keepalive, Timeout: cfg.Keepalive, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.maxMsg()), grpc.MaxCallSendMsgSize(cfg.maxMsg())),
	)
	if err != nil {
		return nil, fmt.Errorf("grpcx: dial %s: %w", addr, err)
	}
	c := &Conn{cfg: cfg, cc: cc, client: transportv1.NewKVTransportClient(cc)}
	resp, err := c.client.Handshake(ctx, &transportv1.HandshakeRequest{Sender: wire.Descriptor(local)})
	if err != nil {
		cc.Close()
		return nil, fromStatus(ctx, err)
	}
	if c.peer, err = wire.FromDescriptor(resp.GetReceiver()); err == nil {
		err = transport.Compatible(local, c.peer)
	}
	if err != nil {
		cc.Close()
		return nil, err
	}
	return c, nil
}

// Peer returns the receiver's descriptor.
func (c *Conn) Peer() transport.Descriptor { return c.peer }

// MaxChunkBytes is the configured message bound.
func (c *Conn) MaxChunkBytes() int { return c.cfg.MaxChunkBytes }

// Reserve leases destination blocks at the receiver.
func (c *Conn) Reserve(ctx context.Context, g transport.Grant, n int) (transport.Lease, error) {
	if n <= 0 {
		return transport.Lease{}, fmt.Errorf("%w: %d blocks", transport.ErrInvalid, n)
	}
	resp, err := c.client.Reserve(ctx, &transportv1.ReserveRequest{Grant: wire.Grant(g), Blocks: uint32(n)})
	if err != nil {
		return transport.Lease{}, fromStatus(ctx, err)
	}
	return wire.Lease(g, resp), nil
}

// Cancel ends the transfer at the receiver.
func (c *Conn) Cancel(ctx context.Context, g transport.Grant, reason string) error {
	_, err := c.client.Cancel(ctx, &transportv1.CancelRequest{Grant: wire.Grant(g), Reason: reason})
	return fromStatus(ctx, err)
}

// Close closes the connection; open streams break.
func (c *Conn) Close() error { return c.cc.Close() }

// OpenStream starts a transfer's push stream and sends its Open frame.
func (c *Conn) OpenStream(ctx context.Context, g transport.Grant, dst []int32) (transport.Stream, error) {
	// The stream lives until Close, not until ctx ends: each call below
	// binds its own ctx to the stream while it runs.
	sctx, cancel := context.WithCancel(context.Background())
	ps, err := c.client.Push(sctx, grpc.ForceCodecV2(newCodec()))
	if err != nil {
		cancel()
		return nil, fromStatus(ctx, err)
	}
	s := &stream{ps: ps, ctx: sctx, cancel: cancel, logger: c.cfg.Logger, acks: make(chan transport.Ack, c.peer.Spec.Layers+1), ended: make(chan struct{})}
	s.wg.Add(1)
	go s.recvLoop()
	open := &transportv1.Frame{Kind: &transportv1.Frame_Open{Open: &transportv1.Open{Grant: wire.Grant(g), DstBlocks: dst}}}
	if err := s.send(ctx, open); err != nil {
		s.Close(err)
		return nil, err
	}
	return s, nil
}

// stream is the client half of one Push call. One goroutine sends; recvLoop
// (owned, joined by Close) reads acknowledgements.
type stream struct {
	ps     transportv1.KVTransport_PushClient
	ctx    context.Context // ends only when this side cancels
	logger *slog.Logger
	cancel context.CancelFunc
	seq    uint64
	out    outChunk
	track  inflight

	acks  chan transport.Ack
	ended chan struct{} // closed when recvLoop ends; err is then set
	err   error
	wg    sync.WaitGroup
	once  sync.Once
}

func (s *stream) recvLoop() {
	defer s.wg.Done()
	defer close(s.ended)
	ctx := s.ctx
	for {
		m, err := s.ps.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: receiver ended the stream", transport.ErrPeerLost)
			}
			s.err = fromStatus(ctx, err)
			if errors.Is(s.err, context.Canceled) {
				s.err = fmt.Errorf("%w: stream closed", transport.ErrClosed)
			}
			return
		}
		var a transport.Ack
		switch k := m.GetKind().(type) {
		case *transportv1.Ack_LayerDone:
			a = transport.Ack{Kind: transport.AckLayerDone, Layer: int(k.LayerDone.GetLayer())}
		case *transportv1.Ack_Committed:
			a = transport.Ack{Kind: transport.AckCommitted, Blocks: k.Committed.GetBlocks()}
		default:
			s.err = fmt.Errorf("%w: unexpected acknowledgement %T", transport.ErrProtocol, k)
			s.cancel()
			return
		}
		select {
		case s.acks <- a:
		default: // sized for one per layer plus the commit
			s.err = fmt.Errorf("%w: more acknowledgements than layers", transport.ErrProtocol)
			s.cancel()
			return
		}
	}
}

// send numbers and writes one frame, bounded by ctx.
func (s *stream) send(ctx context.Context, f *transportv1.Frame) error { return s.sendMsg(ctx, f) }

// sendMsg numbers and writes a Frame or an outChunk. When the receiver has
// already ended the stream, SendMsg reports io.EOF and the real reason
// comes from recvLoop.
func (s *stream) sendMsg(ctx context.Context, m any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()
	s.seq++
	switch f := m.(type) {
	case *transportv1.Frame:
		f.Seq = s.seq
	case *outChunk:
		f.seq = s.seq
	}
	err := s.ps.SendMsg(m)
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	select {
	case <-s.ended:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stream) SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error {
	// The codec puts segs on the wire without copying; the sender's
	// memory stays pinned until the transfer's Release, after the stream.
	s.out.layer, s.out.offset, s.out.segs, s.out.crc, s.out.track = uint32(layer), offset, segs, crc, &s.track
	return s.sendMsg(ctx, &s.out)
}

func (s *stream) SendLayerEnd(ctx context.Context, layer int) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: uint32(layer)}}})
}

func (s *stream) SendCommit(ctx context.Context) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}})
}

func (s *stream) Recv(ctx context.Context) (transport.Ack, error) {
	return transport.RecvAck(ctx, s.acks, s.ended, func() error { return s.err }, s.cancel)
}

// Close ends the stream. With a nil cause the transfer committed and the
// half-close is a courtesy; otherwise cancelling the RPC makes the receiver
// abort the transfer and free its blocks.
func (s *stream) Close(cause error) error {
	s.once.Do(func() {
		if cause == nil {
			_ = s.ps.CloseSend()
		}
		s.cancel()
		s.wg.Wait()
		// gRPC drops a cancelled stream's queued data promptly; the bound
		// only guards against a gRPC bug stalling the caller forever.
		if !s.track.wait(releaseWait) {
			s.logger.Error("gRPC still holds payload buffers of a closed stream", "wait", releaseWait)
		}
	})
	return nil
}

// releaseWait bounds how long Close waits for gRPC to release payload.
const releaseWait = 5 * time.Second
