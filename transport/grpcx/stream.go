package grpcx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// stream is one transfer on a pipe, owned by one goroutine. Sends and
// receives both run on that goroutine, each bounded by its own ctx (ctx
// ending cancels the pipe), so no goroutine stands between gRPC and the
// caller: an acknowledgement is one hand-off from gRPC's reader, not two.
type stream struct {
	c      *Conn
	p      *pipe
	logger *slog.Logger
	layers int // the receiver's layer count bounds its LayerDone acks
	acked  int // LayerDone acks read
	seq    uint64
	out    outChunk
	track  inflight

	err       error // the first failure; the pipe is cancelled by then
	committed bool  // the receiver's Committed arrived: the pipe is clean
	closed    bool
}

// OpenStream starts a transfer on an idle pipe (or a fresh one) and sends
// its Open frame. A pipe that already carried transfers may have been
// ended by the receiver while it waited; a send that fails there never
// reached the receiver (gRPC refuses to queue on an ended stream), so the
// Open is retried on the next pipe, at worst a fresh one.
func (c *Conn) OpenStream(ctx context.Context, g transport.Grant, dst []int32) (transport.Stream, error) {
	open := &transportv1.Open{Grant: wire.Grant(g), DstBlocks: dst}
	for {
		p, err := c.take(ctx)
		if err != nil {
			return nil, err
		}
		s := &stream{c: c, p: p, logger: c.cfg.Logger, layers: c.peer.Spec.Layers}
		err = s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_Open{Open: open}})
		if err == nil {
			return s, nil
		}
		retry := p.reused && ctx.Err() == nil && errors.Is(err, transport.ErrPeerLost)
		_ = s.Close(err)
		if !retry {
			return nil, err
		}
		c.cfg.Logger.Debug("idle push stream had ended; opening another", "err", err)
	}
}

// call runs op bounded by ctx and makes its failure the stream's.
func (s *stream) call(ctx context.Context, op func() error) error {
	if s.err != nil {
		return s.err
	}
	if err := ctx.Err(); err != nil {
		return s.fail(err)
	}
	stop := context.AfterFunc(ctx, s.p.cancel)
	err := op()
	if !stop() {
		// ctx ended while op ran and the pipe is cancelled: whatever op
		// returned, the caller's deadline or cancellation is the cause.
		return s.fail(ctx.Err())
	}
	if err != nil {
		return s.fail(err)
	}
	return nil
}

func (s *stream) fail(err error) error {
	if s.err == nil {
		s.err = err
		s.p.cancel()
	}
	return s.err
}

// send numbers and writes a Frame or an outChunk.
func (s *stream) send(ctx context.Context, m any) error {
	return s.call(ctx, func() error {
		s.seq++
		switch f := m.(type) {
		case *transportv1.Frame:
			f.Seq = s.seq
		case *outChunk:
			f.seq = s.seq
		}
		err := s.p.ps.SendMsg(m)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, io.EOF):
			return s.p.reason(ctx)
		default: // gRPC refused the message itself and ended the stream
			return fromStatus(ctx, err)
		}
	})
}

func (s *stream) SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error {
	// The codec puts segs on the wire without copying; the sender's
	// memory stays pinned until the transfer's Release, after Close.
	s.out.layer, s.out.offset, s.out.segs, s.out.crc, s.out.track = uint32(layer), offset, segs, crc, &s.track
	return s.send(ctx, &s.out)
}

func (s *stream) SendLayerEnd(ctx context.Context, layer int) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: uint32(layer)}}})
}

func (s *stream) SendCommit(ctx context.Context) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}})
}

// Recv reads the next acknowledgement. The receiver sends one LayerDone
// per layer and then Committed; anything else, or more, breaks the stream.
func (s *stream) Recv(ctx context.Context) (transport.Ack, error) {
	var a transport.Ack
	err := s.call(ctx, func() error {
		if s.committed {
			return fmt.Errorf("%w: grpcx: receive after the commit", transport.ErrInvalid)
		}
		if err := s.p.ps.RecvMsg(&s.p.ack); err != nil {
			return s.p.recvError(ctx, err)
		}
		switch k := s.p.ack.GetKind().(type) {
		case *transportv1.Ack_LayerDone:
			if s.acked++; s.acked > s.layers {
				return fmt.Errorf("%w: more acknowledgements than layers", transport.ErrProtocol)
			}
			a = transport.Ack{Kind: transport.AckLayerDone, Layer: int(k.LayerDone.GetLayer())}
		case *transportv1.Ack_Committed:
			a = transport.Ack{Kind: transport.AckCommitted, Blocks: k.Committed.GetBlocks()}
			s.committed = true
		default:
			return fmt.Errorf("%w: unexpected acknowledgement %T", transport.ErrProtocol, k)
		}
		return nil
	})
	return a, err
}

// Close ends the transfer's use of the pipe. After a clean commit the pipe
// goes back to the idle list for the next transfer; otherwise it is
// cancelled, which makes the receiver abort the transfer and free its
// blocks. Either way Close returns once gRPC released the payload.
func (s *stream) Close(cause error) error {
	if s.closed {
		return nil
	}
	s.closed = true
	clean := cause == nil && s.err == nil && s.committed
	if !clean {
		s.p.cancel()
	}
	// The commit's answer follows every chunk, so a clean transfer's
	// payload is long written; a cancelled one is dropped promptly. The
	// bound only guards against a gRPC bug stalling the caller forever.
	if !s.track.wait(releaseWait) {
		s.logger.Error("gRPC still holds payload buffers of a closed stream", "wait", releaseWait)
		s.p.cancel()
		return nil
	}
	if clean {
		s.c.put(s.p)
	}
	return nil
}

// releaseWait bounds how long Close waits for gRPC to release payload.
const releaseWait = 5 * time.Second
