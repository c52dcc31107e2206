package shm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// OpenStream starts one transfer on an idle pipe or a new one. A transfer
// whose reservation came with a fence key, to a receiver whose KV file is
// mapped, writes its blocks in place; any other stages its chunks.
func (c *Conn) OpenStream(ctx context.Context, g transport.Grant, dst []int32) (transport.Stream, error) {
	fk := c.takeKey(g)
	inPlace := fk.key != 0 && c.rem != nil && c.rem.retain()
	p, err := c.takePipe(ctx, !inPlace)
	if err != nil {
		if inPlace {
			c.rem.drop()
		}
		return nil, err
	}
	s := &stream{conn: c, p: p, acks: make(chan transport.Ack, c.peer.Spec.Layers+1), ended: make(chan struct{})}
	start := &transportv1.StartPush{InPlace: inPlace}
	var fds []int
	if inPlace {
		s.rem, s.key, s.lead, s.dst, s.bb = c.rem, fk.key, fk.lead, dst, c.peer.Spec.BlockBytes()
		s.streamed = len(dst)*s.bb*c.peer.Spec.Layers >= c.cfg.StreamBytes
	} else {
		s.free = make(chan int, p.seg.slots)
		for i := range p.seg.slots {
			s.free <- i
		}
		start.Slots, start.SlotBytes, start.Reuse = uint32(p.seg.slots), uint32(p.seg.slot), p.segShared
		if !p.segShared {
			fds = []int{p.seg.fd}
		}
	}
	// The start and the Open leave together. From then on the receiver
	// ties the transfer to this connection and frees its blocks at once
	// if the connection dies (this process with it). A staged push sends
	// them now; one in place holds them back for its first write (a layer
	// end after layerFlushEvery, or the commit), since the receiver armed
	// the fence at Reserve and has nothing to do before then: a fast
	// transfer costs the receiver one wake-up and the sender one write.
	// Until then the receiver ties the reservation to the control
	// connection and frees it when that closes because this process died.
	s.out, err = appendMsg(s.out, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_StartPush{StartPush: start}})
	if err == nil {
		s.seq = 1
		open := &transportv1.Frame{Seq: 1, Kind: &transportv1.Frame_Open{Open: &transportv1.Open{Grant: wire.Grant(g), DstBlocks: dst}}}
		s.out, err = appendMsg(s.out, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Frame{Frame: open}})
	}
	if err == nil && inPlace {
		s.flushed = time.Now()
	} else if err == nil {
		err = s.flush(ctx, fds...)
		if err == nil && !p.segShared {
			// The receiver holds its own descriptor now; the mapping keeps ours.
			unix.Close(p.seg.fd)
			p.seg.fd = -1
			p.segShared = true
		}
	}
	if err != nil {
		if inPlace {
			c.rem.drop()
		}
		p.close()
		return nil, err
	}
	if !inPlace {
		s.wg.Add(1)
		s.reading = true
		go s.recvLoop()
	}
	return s, nil
}

// takePipe returns an idle pipe or connects a new one; staged pushes need
// the pipe's segment, made on first use.
func (c *Conn) takePipe(ctx context.Context, staged bool) (*pipe, error) {
	var p *pipe
	c.idleMu.Lock()
	if n := len(c.idle); n > 0 {
		p = c.idle[n-1]
		c.idle = c.idle[:n-1]
	}
	c.idleMu.Unlock()
	if p != nil && !p.idle() {
		c.cfg.Logger.Debug("shm: dropping a pipe the receiver wrote to or hung up after its last push")
		p.close()
		p = nil
	}
	if p == nil {
		uc, r, _, err := c.connect(ctx)
		if err != nil {
			return nil, err
		}
		p = &pipe{uc: uc, r: r}
	}
	if staged && p.seg == nil {
		seg, err := createSegment(c.cfg.Slots, c.cfg.SlotBytes)
		if err != nil {
			p.close()
			return nil, err
		}
		p.seg = seg
	}
	return p, nil
}

// idle reports whether a pipe kept for reuse is still clean: nothing
// unread (a receiver that failed a sealed transfer after its commit frame
// writes why and hangs up) and not closed by the receiver.
func (p *pipe) idle() bool {
	rc, err := p.uc.SyscallConn()
	if err != nil {
		return false
	}
	clean := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		clean = n < 0 && errors.Is(err, unix.EAGAIN)
		return true // never wait: the answer is now or never
	})
	return err == nil && clean && !p.r.buffered()
}

// putPipe keeps a cleanly committed pipe for the next transfer.
func (c *Conn) putPipe(p *pipe) {
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

// layerFlushEvery is how long an in-place stream may hold layer ends
// back; a layer's prefill takes longer on any real prompt, so in practice
// only back-to-back layers (a cached or already computed prefix) share a write.
const layerFlushEvery = time.Millisecond

// stream is the sender half of one transfer. One goroutine sends. Staged,
// recvLoop (owned, joined by Close) reads acknowledgements and slot returns
// concurrently; in place there is nothing to read until the commit, and
// Recv reads the socket itself.
type stream struct {
	conn    *Conn
	p       *pipe
	seq     uint64
	out     []byte    // frames not yet written
	flushed time.Time // when out was last written

	// In place: the receiver's mapped memory, the lease's fence key, and
	// the destination blocks in payload order.
	rem  *remote
	key  uint64
	lead int32 // the lease's first block: its seal word
	dst  []int32
	bb   int
	// streamed: the transfer is written past the cache, in runs; held
	// and copies are one write's blocks and runs, kept between writes.
	streamed bool
	held     []int32
	copies   []inPlaceCopy
	// sealed: SealCommit committed the transfer; its frame reached the
	// socket unless unsent.
	sealed, unsent bool

	free      chan int // staged: free slots of the segment
	acks      chan transport.Ack
	ended     chan struct{} // closed when the stream's reading ends; err is then set
	err       error
	committed bool                    // the commit was read and reading stopped; set before ended closes
	reading   bool                    // a recvLoop goroutine reads (staged); otherwise Recv reads itself
	resp      transportv1.ShmResponse // Recv's buffer when it reads itself
	wg        sync.WaitGroup
	once      sync.Once
}

var _ transport.InPlaceStream = (*stream)(nil)

// InPlace reports whether chunks are written straight into the
// receiver's KV memory.
func (s *stream) InPlace() bool { return s.rem != nil }

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
		a, ok, end, committed := s.take(resp)
		if ok && !s.queue(a) {
			return
		}
		if end != nil {
			s.err, s.committed = end, committed
			return
		}
	}
}

// take interprets one receiver message: an acknowledgement for Recv (ok),
// a slot return (consumed here), or the end of the stream (end set, and
// committed when the end is the commit, whose acknowledgement comes with it).
func (s *stream) take(resp *transportv1.ShmResponse) (a transport.Ack, ok bool, end error, committed bool) {
	if f := resp.GetFailure(); f != nil {
		return a, false, wire.FromFailure(f), false
	}
	switch k := resp.GetAck().GetKind().(type) {
	case *transportv1.Ack_SlotFree:
		if s.free != nil && k.SlotFree.GetSlot() < uint32(cap(s.free)) {
			select {
			case s.free <- int(k.SlotFree.GetSlot()):
				return a, false, nil, false
			default: // more returns than slots
			}
		}
		return a, false, fmt.Errorf("%w: shm: bad slot return %d", transport.ErrProtocol, k.SlotFree.GetSlot()), false
	case *transportv1.Ack_LayerDone:
		return transport.Ack{Kind: transport.AckLayerDone, Layer: int(k.LayerDone.GetLayer())}, true, nil, false
	case *transportv1.Ack_Committed:
		// Nothing follows a commit: stop reading, so the pipe can carry
		// the next transfer.
		a = transport.Ack{Kind: transport.AckCommitted, Blocks: k.Committed.GetBlocks()}
		return a, true, fmt.Errorf("%w: transfer committed", transport.ErrClosed), true
	default:
		return a, false, fmt.Errorf("%w: shm: unexpected response %T", transport.ErrProtocol, k), false
	}
}

// recvDirect is Recv for a stream without a reader goroutine (in place:
// no slot returns to collect while sending): it reads the socket itself,
// bounded by ctx, saving a goroutine hand-off per acknowledgement.
func (s *stream) recvDirect(ctx context.Context) (transport.Ack, error) {
	if err := s.alive(ctx); err != nil {
		return transport.Ack{}, err
	}
	// Acknowledgements mostly arrive together (a layer end per layer, then
	// the commit, answered in one write): only a read that may block needs
	// ctx bound to the socket.
	if !s.p.r.buffered() {
		stop := bindDeadline(ctx, s.p.uc)
		defer func() {
			stop()
			s.p.uc.SetDeadline(time.Time{})
		}()
	}
	resp := &s.resp
	for {
		resp.Reset()
		if err := s.p.r.read(resp); err != nil {
			// A read cut short leaves the framing unknown: the stream ends.
			err = ioError(ctx, err)
			s.finish(err, false)
			return transport.Ack{}, err
		}
		a, ok, end, committed := s.take(resp)
		if end != nil {
			s.finish(end, committed)
		}
		switch {
		case ok:
			return a, nil
		case end != nil:
			return transport.Ack{}, end
		}
	}
}

// finish ends a stream read without a reader goroutine.
func (s *stream) finish(err error, committed bool) {
	s.err, s.committed = err, committed
	close(s.ended)
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

// alive returns the receiver's reason when it has ended the stream.
func (s *stream) alive(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.ended:
		return s.err
	default:
		return nil
	}
}

// send numbers f and queues it; flush writes the queue now.
func (s *stream) send(ctx context.Context, f *transportv1.Frame, flush bool) error {
	if err := s.alive(ctx); err != nil {
		return err
	}
	s.seq++
	f.Seq = s.seq
	var err error
	if s.out, err = appendMsg(s.out, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Frame{Frame: f}}); err != nil || !flush {
		return err
	}
	return s.flush(ctx)
}

// flush writes the queued frames (with fds attached), bounded by ctx.
func (s *stream) flush(ctx context.Context, fds ...int) error {
	stop := bindDeadline(ctx, s.p.uc)
	var err error
	if len(fds) > 0 {
		var n int
		n, _, err = s.p.uc.WriteMsgUnix(s.out, unix.UnixRights(fds...), nil)
		if err == nil && n != len(s.out) {
			_, err = s.p.uc.Write(s.out[n:])
		}
	} else {
		_, err = s.p.uc.Write(s.out)
	}
	s.out = s.out[:0]
	s.flushed = time.Now()
	if !stop() || err != nil {
		s.p.uc.SetDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() == nil {
			if reason := s.reason(ctx); reason != nil {
				return reason // the receiver ended the stream and said why
			}
		}
		return ioError(ctx, err)
	}
	return nil
}

// reason waits up to a second for the receiver's account of why the stream
// ended (a Failure it wrote before closing), reading it itself when no
// reader goroutine runs. It returns nil when none comes.
func (s *stream) reason(ctx context.Context) error {
	if !s.reading {
		wait, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		for {
			if _, err := s.recvDirect(wait); err != nil {
				if wait.Err() != nil && ctx.Err() == nil {
					return nil // the receiver said nothing within the wait
				}
				break
			}
		}
	}
	select {
	case <-s.ended:
		if !s.committed {
			return s.err
		}
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	return nil
}

// SendChunk writes the chunk in place, or copies it into a free staging
// slot (waiting for one, bounded by ctx) and announces it.
func (s *stream) SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error {
	if s.rem != nil {
		if err := s.alive(ctx); err != nil {
			return err
		}
		if err := s.writeInPlace(layer, offset, segs); err != nil {
			return s.refused(ctx, layer, err)
		}
		return nil
	}
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
	sc := &transportv1.ShmChunk{Layer: uint32(layer), Offset: offset, Slot: uint32(slot), Length: uint32(n), Crc32C: crc}
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_ShmChunk{ShmChunk: sc}}, true)
}

// A transfer of Config.StreamBytes or more is written past the cache: each
// write takes the fence words of all its blocks first and copies runs of
// blocks adjacent in both source and region as one, which memmove does with
// non-temporal stores from 1 MiB up (a Llama-3-8B layer of 1,024 tokens is
// one 4 MiB copy, a quarter faster than block by block), since its bytes
// would evict each other and the receiver's working set anyway. A smaller
// one is copied block by block with ordinary stores, so its bytes land in
// cache, where the receiver's next decode step reads them (and a 1 MiB
// transfer copies 6% faster than in runs here).

// writeInPlace copies payload bytes [offset, ...) of layer into the
// destination blocks, holding each block's fence word for its copy, so
// nothing lands once the receiver has ended the lease.
func (s *stream) writeInPlace(layer int, offset uint64, segs [][]byte) error {
	if layer < 0 || layer >= len(s.rem.regions) {
		return fmt.Errorf("%w: shm: layer %d of %d", transport.ErrInvalid, layer, len(s.rem.regions))
	}
	region := s.rem.regions[layer]
	if s.streamed {
		return s.writeRuns(region, offset, segs)
	}
	pos := offset
	for _, seg := range segs {
		for len(seg) > 0 {
			b, within, err := s.block(pos)
			if err != nil {
				return err
			}
			n := min(s.bb-within, len(seg))
			if err := acquire(s.rem.fence, b, s.key, s.rem.writer); err != nil {
				return err
			}
			copy(region[int(b)*s.bb+within:], seg[:n])
			if err := release(s.rem.fence, b, s.key, s.rem.writer); err != nil {
				return err
			}
			pos += uint64(n)
			seg = seg[n:]
		}
	}
	return nil
}

// block locates payload offset pos: its destination block and the offset
// within it.
func (s *stream) block(pos uint64) (b int32, within int, err error) {
	idx, within := int(pos/uint64(s.bb)), int(pos%uint64(s.bb))
	if idx >= len(s.dst) || s.dst[idx] < 0 || int(s.dst[idx]) >= len(s.rem.fence) {
		return 0, 0, fmt.Errorf("%w: shm: payload offset %d beyond %d destination blocks", transport.ErrInvalid, pos, len(s.dst))
	}
	return s.dst[idx], within, nil
}

// inPlaceCopy is one run of a write: segs[seg][from:to] goes to region
// offset dst.
type inPlaceCopy struct {
	seg, from, to, dst int
}

// writeRuns is writeInPlace for a streamed transfer: all of the write's
// blocks are taken, its runs copied, and the blocks handed back.
func (s *stream) writeRuns(region []byte, offset uint64, segs [][]byte) error {
	held, copies := s.held[:0], s.copies[:0]
	pos := offset
	for si, seg := range segs {
		for from := 0; from < len(seg); {
			b, within, err := s.block(pos)
			if err != nil {
				return err
			}
			n := min(s.bb-within, len(seg)-from)
			if len(held) == 0 || held[len(held)-1] != b {
				held = append(held, b)
			}
			dst := int(b)*s.bb + within
			if k := len(copies) - 1; k >= 0 && copies[k].seg == si && copies[k].to == from && copies[k].dst+(from-copies[k].from) == dst {
				copies[k].to += n
			} else {
				copies = append(copies, inPlaceCopy{seg: si, from: from, to: from + n, dst: dst})
			}
			pos += uint64(n)
			from += n
		}
	}
	s.held, s.copies = held, copies
	for i, b := range held {
		if err := acquire(s.rem.fence, b, s.key, s.rem.writer); err != nil {
			s.releaseHeld(held[:i])
			return err
		}
	}
	for _, c := range copies {
		copy(region[c.dst:], segs[c.seg][c.from:c.to])
	}
	return s.releaseHeld(held)
}

// releaseHeld hands back every block taken for a write, reporting the first
// one the receiver revoked meanwhile.
func (s *stream) releaseHeld(held []int32) error {
	var first error
	for _, b := range held {
		if err := release(s.rem.fence, b, s.key, s.rem.writer); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// SendLayerEnd announces a complete layer. In place, the frame waits for
// the next one unless the last write was long enough ago that the receiver
// should hear of progress (its lease is renewed by every frame): a transfer
// whose layers come faster than that costs one write in all, with its
// commit, while one that follows a slow prefill reports every layer.
// refused explains a write the fence turned down. The receiver ended the
// lease (cancelled, expired, superseded) and knows why: any frame draws its
// reason back on this stream, so a layer end is sent and the answer awaited
// briefly. The frame cannot complete anything, since the transfer fails
// here whatever the answer.
func (s *stream) refused(ctx context.Context, layer int, err error) error {
	f := &transportv1.Frame{Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: uint32(layer)}}}
	if serr := s.send(ctx, f, true); serr != nil {
		return serr
	}
	if reason := s.reason(ctx); reason != nil {
		return reason
	}
	return err
}

func (s *stream) SendLayerEnd(ctx context.Context, layer int) error {
	f := &transportv1.Frame{Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: uint32(layer)}}}
	return s.send(ctx, f, s.rem == nil || time.Since(s.flushed) >= layerFlushEvery)
}

// SealCommit commits an in-place transfer one-sided (see transport.Fence).
func (s *stream) SealCommit(ctx context.Context) ([]int32, error) {
	if s.rem == nil {
		return nil, fmt.Errorf("%w: shm: sealing a staged transfer", transport.ErrInvalid)
	}
	if err := s.alive(ctx); err != nil {
		return nil, err
	}
	commit := &transportv1.Frame{Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}}
	if err := seal(s.rem.seals, s.lead, s.key); err != nil {
		// The receiver ended the lease first; the frame draws its reason.
		if serr := s.send(ctx, commit, true); serr != nil {
			return nil, serr
		}
		if reason := s.reason(ctx); reason != nil {
			return nil, reason
		}
		return nil, err
	}
	s.sealed = true
	// Committed. The frame lets the receiver know now; were it lost, the
	// receiver still finds the seal when this stream ends.
	if err := s.send(ctx, commit, true); err != nil {
		s.unsent = true
		s.conn.cfg.Logger.Debug("shm: commit frame of a sealed transfer not sent; the receiver finds the seal when the stream ends", "err", err)
	}
	return append([]int32(nil), s.dst...), nil
}

func (s *stream) SendCommit(ctx context.Context) error {
	return s.send(ctx, &transportv1.Frame{Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}}, true)
}

func (s *stream) Recv(ctx context.Context) (transport.Ack, error) {
	if !s.reading {
		return s.recvDirect(ctx)
	}
	return transport.RecvAck(ctx, s.acks, s.ended, func() error { return s.err }, nil)
}

// Close ends the stream. After a clean commit the pipe goes back to the
// Conn for reuse; otherwise closing the socket before a commit makes the
// receiver abort the transfer and free its blocks.
func (s *stream) Close(cause error) error {
	s.once.Do(func() {
		if cause == nil && s.reading {
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
			clean = cause == nil && s.sealed && !s.unsent
		}
		if s.rem != nil {
			s.rem.drop()
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
