package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Conn is a sender's connection to a receiver on the same host. Unary calls
// share one control socket; each transfer opens its own socket and segment.
type Conn struct {
	cfg   Config
	path  string
	local transport.Descriptor
	peer  transport.Descriptor

	mu   sync.Mutex // serialises unary calls on ctl
	ctl  *net.UnixConn
	r    *reader
	wbuf []byte

	idleMu sync.Mutex
	idle   []*pipe // connections whose last push committed cleanly
	closed bool
}

// maxIdle bounds the pipes kept for reuse per Conn.
const maxIdle = 4

// pipe is one push connection and its staging segment. Creating them costs
// a socket, a handshake, memfd_create and two mmaps; a committed pipe is
// reused, so a small transfer pays only its control messages.
type pipe struct {
	uc     *net.UnixConn
	r      *reader
	seg    *segment
	reused bool
}

func (p *pipe) close() {
	p.uc.Close()
	p.r.close()
	p.seg.close()
}

var (
	_ transport.Conn   = (*Conn)(nil)
	_ transport.Stream = (*stream)(nil)
)

// Dial connects to the receiver's socket at path and handshakes.
func Dial(ctx context.Context, cfg Config, path string, local transport.Descriptor) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := local.Validate(); err != nil {
		return nil, err
	}
	c := &Conn{cfg: cfg, path: path, local: local}
	ctl, r, peer, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctl, c.r, c.peer = ctl, r, peer
	return c, nil
}

// connect opens a socket and handshakes on it.
func (c *Conn) connect(ctx context.Context) (*net.UnixConn, *reader, transport.Descriptor, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, nil, transport.Descriptor{}, fmt.Errorf("%w: shm: dial %s: %w", transport.ErrPeerLost, c.path, err)
	}
	uc := nc.(*net.UnixConn)
	r := newReader(uc)
	hs := &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Handshake{Handshake: &transportv1.HandshakeRequest{Sender: wire.Descriptor(c.local)}}}
	resp, err := roundTrip(ctx, uc, r, nil, hs)
	var peer transport.Descriptor
	if err == nil {
		if peer, err = wire.FromDescriptor(resp.GetHandshake().GetReceiver()); err == nil {
			err = transport.Compatible(c.local, peer)
		}
	}
	if err != nil {
		uc.Close()
		r.close()
		return nil, nil, transport.Descriptor{}, err
	}
	return uc, r, peer, nil
}

// roundTrip writes req and reads its answer, bounded by ctx.
func roundTrip(ctx context.Context, uc *net.UnixConn, r *reader, buf []byte, req *transportv1.ShmRequest) (*transportv1.ShmResponse, error) {
	stop := bindDeadline(ctx, uc)
	defer stop()
	resp := new(transportv1.ShmResponse)
	if _, err := writeMsg(uc, buf, req); err != nil {
		// A receiver that refused us wrote its reason before closing.
		if rerr := r.read(resp); rerr == nil && resp.GetFailure() != nil {
			return nil, wire.FromFailure(resp.GetFailure())
		}
		return nil, ioError(ctx, err)
	}
	if err := r.read(resp); err != nil {
		return nil, ioError(ctx, err)
	}
	if f := resp.GetFailure(); f != nil {
		return nil, wire.FromFailure(f)
	}
	return resp, nil
}

// bindDeadline makes blocking I/O on uc return when ctx ends.
func bindDeadline(ctx context.Context, uc *net.UnixConn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		uc.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { uc.SetDeadline(time.Unix(1, 0)) })
}

// ioError classifies a socket error: the caller's deadline or cancellation,
// or a lost peer.
func ioError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", transport.ErrTimeout, cerr)
		}
		return cerr
	}
	if errors.Is(err, transport.ErrProtocol) {
		return err
	}
	return fmt.Errorf("%w: shm: %w", transport.ErrPeerLost, err)
}

// Peer returns the receiver's descriptor.
func (c *Conn) Peer() transport.Descriptor { return c.peer }

// MaxChunkBytes is the staging slot size.
func (c *Conn) MaxChunkBytes() int { return c.cfg.SlotBytes }

func (c *Conn) call(ctx context.Context, req *transportv1.ShmRequest) (*transportv1.ShmResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := roundTrip(ctx, c.ctl, c.r, c.wbuf, req)
	if err == nil {
		c.ctl.SetDeadline(time.Time{})
	}
	return resp, err
}

// Reserve leases destination blocks at the receiver.
func (c *Conn) Reserve(ctx context.Context, g transport.Grant, n int) (transport.Lease, error) {
	if n <= 0 {
		return transport.Lease{}, fmt.Errorf("%w: %d blocks", transport.ErrInvalid, n)
	}
	resp, err := c.call(ctx, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Reserve{Reserve: &transportv1.ReserveRequest{Grant: wire.Grant(g), Blocks: uint32(n)}}})
	if err != nil {
		return transport.Lease{}, err
	}
	return wire.Lease(g, resp.GetReserve()), nil
}

// Cancel ends the transfer at the receiver.
func (c *Conn) Cancel(ctx context.Context, g transport.Grant, reason string) error {
	_, err := c.call(ctx, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Cancel{Cancel: &transportv1.CancelRequest{Grant: wire.Grant(g), Reason: reason}}})
	return err
}

// Close closes the control socket and idle pipes; open streams have their
// own and end on their own Close.
func (c *Conn) Close() error {
	c.idleMu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.idleMu.Unlock()
	for _, p := range idle {
		p.close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.close()
	return c.ctl.Close()
}

// OpenStream starts one transfer on an idle pipe or a new one.
func (c *Conn) OpenStream(ctx context.Context, g transport.Grant, dst []int32) (transport.Stream, error) {
	p, err := c.takePipe(ctx)
	if err != nil {
		return nil, err
	}
	s := &stream{conn: c, p: p, free: make(chan int, p.seg.slots), acks: make(chan transport.Ack, c.peer.Spec.Layers+1), ended: make(chan struct{})}
	for i := range p.seg.slots {
		s.free <- i
	}
	stop := bindDeadline(ctx, p.uc)
	start := &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_StartPush{StartPush: &transportv1.StartPush{Slots: uint32(p.seg.slots), SlotBytes: uint32(p.seg.slot), Reuse: p.reused}}}
	if p.reused {
		s.wbuf, err = writeMsg(p.uc, s.wbuf, start)
	} else {
		s.wbuf, err = writeMsg(p.uc, s.wbuf, start, p.seg.fd)
		// The receiver holds its own descriptor now; the mapping keeps ours.
		unix.Close(p.seg.fd)
		p.seg.fd = -1
	}
	stop()
	if err != nil {
		err = ioError(ctx, err)
		p.close()
		return nil, err
	}
	p.uc.SetDeadline(time.Time{})
	s.wg.Add(1)
	go s.recvLoop()
	open := &transportv1.Frame{Kind: &transportv1.Frame_Open{Open: &transportv1.Open{Grant: wire.Grant(g), DstBlocks: dst}}}
	if err := s.send(ctx, open); err != nil {
		s.Close(err)
		return nil, err
	}
	return s, nil
}

func (c *Conn) takePipe(ctx context.Context) (*pipe, error) {
	c.idleMu.Lock()
	if n := len(c.idle); n > 0 {
		p := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.idleMu.Unlock()
		return p, nil
	}
	c.idleMu.Unlock()
	uc, r, _, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	seg, err := createSegment(c.cfg.Slots, c.cfg.SlotBytes)
	if err != nil {
		uc.Close()
		r.close()
		return nil, err
	}
	return &pipe{uc: uc, r: r, seg: seg}, nil
}

// putPipe keeps a cleanly committed pipe for the next transfer.
func (c *Conn) putPipe(p *pipe) {
	p.reused = true
	c.idleMu.Lock()
	if !c.closed && len(c.idle) < maxIdle {
		c.idle = append(c.idle, p)
		p = nil
	}
	c.idleMu.Unlock()
	if p != nil {
		p.close()
	}
}

// stream is the sender half of one transfer. One goroutine sends;
// recvLoop (owned, joined by Close) reads acknowledgements and slot returns.
type stream struct {
	conn *Conn
	p    *pipe
	seq  uint64
	wbuf []byte
	req  transportv1.ShmRequest
	fr   transportv1.Frame
	sc   transportv1.ShmChunk

	free      chan int
	acks      chan transport.Ack
	ended     chan struct{} // closed when recvLoop ends; err is then set
	err       error
	committed bool // recvLoop saw the commit and stopped reading; set before ended closes
	wg        sync.WaitGroup
	once      sync.Once
}

func (s *stream) recvLoop() {
	defer s.wg.Done()
	defer close(s.ended)
	resp := new(transportv1.ShmResponse)
	for {
		resp.Reset()
		if err := s.p.r.read(resp); err != nil {
			s.err = fmt.Errorf("%w: shm: %w", transport.ErrPeerLost, err)
			return
		}
		if f := resp.GetFailure(); f != nil {
			s.err = wire.FromFailure(f)
			return
		}
		a := resp.GetAck()
		switch k := a.GetKind().(type) {
		case *transportv1.Ack_SlotFree:
			if k.SlotFree.GetSlot() < uint32(s.p.seg.slots) {
				select {
				case s.free <- int(k.SlotFree.GetSlot()):
					continue
				default: // more returns than slots
				}
			}
			s.err = fmt.Errorf("%w: shm: bad slot return %d", transport.ErrProtocol, k.SlotFree.GetSlot())
			return
		case *transportv1.Ack_LayerDone:
			if !s.queue(transport.Ack{Kind: transport.AckLayerDone, Layer: int(k.LayerDone.GetLayer())}) {
				return
			}
		case *transportv1.Ack_Committed:
			if s.queue(transport.Ack{Kind: transport.AckCommitted, Blocks: k.Committed.GetBlocks()}) {
				// Nothing follows a commit: stop reading, so the pipe
				// can carry the next transfer.
				s.committed = true
				s.err = fmt.Errorf("%w: transfer committed", transport.ErrClosed)
			}
			return
		default:
			s.err = fmt.Errorf("%w: shm: unexpected response %T", transport.ErrProtocol, k)
			return
		}
	}
}

// queue hands an acknowledgement to Recv. The queue holds one per layer
// plus the commit, so a correct receiver never fills it; recvLoop must not
// block, or slot returns behind it would stall the sender.
func (s *stream) queue(a transport.Ack) bool {
	select {
	case s.acks <- a:
		return true
	default:
		s.err = fmt.Errorf("%w: shm: more acknowledgements than layers", transport.ErrProtocol)
		return false
	}
}

func (s *stream) send(ctx context.Context, f *transportv1.Frame) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.ended:
		return s.err
	default:
	}
	s.seq++
	f.Seq = s.seq
	s.req.Kind = &transportv1.ShmRequest_Frame{Frame: f}
	stop := bindDeadline(ctx, s.p.uc)
	var err error
	s.wbuf, err = writeMsg(s.p.uc, s.wbuf, &s.req)
	if !stop() || err != nil {
		s.p.uc.SetDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() == nil {
			select { // the receiver's reason, when it ended the stream
			case <-s.ended:
				return s.err
			case <-time.After(time.Second):
			}
		}
		return ioError(ctx, err)
	}
	return nil
}

// SendChunk copies the chunk into a free staging slot (waiting for one,
// bounded by ctx) and announces it.
func (s *stream) SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error {
	var slot int
	select {
	case slot = <-s.free:
	case <-s.ended:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
	dst := s.p.seg.mem[slot*s.p.seg.slot : (slot+1)*s.p.seg.slot]
	n := 0
	for _, seg := range segs {
		if n+len(seg) > len(dst) {
			return fmt.Errorf("%w: shm: chunk larger than a %d-byte slot", transport.ErrInvalid, len(dst))
		}
		n += copy(dst[n:], seg)
	}
	s.sc = transportv1.ShmChunk{Layer: uint32(layer), Offset: offset, Slot: uint32(slot), Length: uint32(n), Crc32C: crc}
	s.fr = transportv1.Frame{Kind: &transportv1.Frame_ShmChunk{ShmChunk: &s.sc}}
	return s.send(ctx, &s.fr)
}

func (s *stream) SendLayerEnd(ctx context.Context, layer int) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: uint32(layer)}}})
}

func (s *stream) SendCommit(ctx context.Context) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}})
}

func (s *stream) Recv(ctx context.Context) (transport.Ack, error) {
	return transport.RecvAck(ctx, s.acks, s.ended, func() error { return s.err }, nil)
}

// Close ends the stream. After a clean commit the pipe goes back to the
// Conn for reuse; otherwise closing the socket before a commit makes the
// receiver abort the transfer and free its blocks.
func (s *stream) Close(cause error) error {
	s.once.Do(func() {
		if cause == nil {
			select {
			case <-s.ended:
			case <-time.After(time.Second): // the commit ack was read, so this is prompt
			}
		}
		clean := false
		select {
		case <-s.ended:
			clean = cause == nil && s.committed && len(s.free) == cap(s.free)
		default:
		}
		if clean {
			s.wg.Wait()
			s.conn.putPipe(s.p)
			return
		}
		s.p.uc.Close()
		s.wg.Wait()
		s.p.close()
	})
	return nil
}
