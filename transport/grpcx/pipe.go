package grpcx

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
)

// pipe is one long-lived Push call. Transfers use it one at a time, back to
// back: each starts with its Open (seq 1) and ends at its Committed
// acknowledgement, after which the pipe is clean and waits in its Conn's
// idle list for the next transfer. Reusing it saves each transfer an HTTP/2
// stream setup and teardown on both peers (headers, a server handler
// goroutine, trailers, a client goroutine watching the call). A pipe that
// saw any failure is cancelled, never reused, so the receiver aborts the
// transfer that was on it.
type pipe struct {
	ps     transportv1.KVTransport_PushClient
	cancel context.CancelFunc
	ack    transportv1.Ack // receive buffer, reused
	// reused is set once the pipe carried a transfer: a send that fails on
	// it may have met a pipe the receiver ended while it was idle.
	reused bool
}

// pipesHeader is the Handshake response header by which a receiver says
// that its Push streams carry transfers back to back (value pipesReuse).
// The wire format is unchanged; a sender only keeps a stream after its
// commit when the receiver will keep reading it, so a sender and a
// receiver of different versions still work together, a stream per
// transfer.
const (
	pipesHeader = "tandem-push-streams"
	pipesReuse  = "reuse"
)

// openPipe starts a Push call. The call outlives ctx (it may carry many
// transfers); ctx bounds only the setup.
func (c *Conn) openPipe(ctx context.Context) (*pipe, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	ps, err := c.client.Push(pctx, grpc.ForceCodecV2(newCodec()))
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended during setup and cancelled the call
	}
	if err != nil {
		cancel()
		return nil, fromStatus(ctx, err)
	}
	return &pipe{ps: ps, cancel: cancel}, nil
}

// take returns an idle pipe, or a fresh one when none waits.
func (c *Conn) take(ctx context.Context) (*pipe, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: grpcx: connection closed", transport.ErrClosed)
	}
	if n := len(c.idle); n > 0 {
		p := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()
	return c.openPipe(ctx)
}

// put returns a clean pipe to the idle list, or ends it when the list is
// full or the connection closed.
func (c *Conn) put(p *pipe) {
	p.reused = true
	c.mu.Lock()
	if c.reuse && !c.closed && len(c.idle) < c.cfg.IdleStreams {
		c.idle = append(c.idle, p)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	p.end()
}

// end half-closes a clean pipe, so the receiver's handler returns at once,
// and releases the call.
func (p *pipe) end() {
	_ = p.ps.CloseSend()
	p.cancel()
}

// reason reads what is left on a pipe whose send failed, up to the status
// the receiver ended it with, and returns that status as a transport
// error. gRPC reports a send on an ended stream as io.EOF and keeps the
// real reason for RecvMsg; the stream is over, so this does not block
// beyond the acknowledgements already buffered.
func (p *pipe) reason(ctx context.Context) error {
	for {
		if err := p.ps.RecvMsg(&p.ack); err != nil {
			return p.recvError(ctx, err)
		}
	}
}

// recvError maps a failed RecvMsg. A clean end of the stream before the
// commit is the receiver leaving mid-transfer.
func (p *pipe) recvError(ctx context.Context, err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: receiver ended the stream", transport.ErrPeerLost)
	}
	return fromStatus(ctx, err)
}
