// Package inproc is the in-process transport backend: a Conn that calls a
// Receiver directly. It moves bytes exactly like the network backends (one
// ordered stream per transfer, numbered frames, CRC per chunk) and can inject
// faults, so the transport's failure rules are tested without sockets.
package inproc

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/tandemserve/tandem/transport"
)

// Fault is what an Interceptor does to a frame.
type Fault uint8

const (
	// Deliver passes the frame through.
	Deliver Fault = iota
	// Corrupt flips a payload bit after the checksum was computed.
	Corrupt
	// Duplicate delivers the frame twice, with the same sequence number.
	Duplicate
	// Cut breaks the connection instead of delivering the frame.
	Cut
)

// Interceptor decides the fate of frame seq (1 is the Open frame).
type Interceptor func(seq uint64) Fault

// Conn is an in-process connection to a Receiver.
type Conn struct {
	recv      *transport.Receiver
	intercept Interceptor

	mu      sync.Mutex
	dead    bool
	streams map[*stream]struct{}
}

var (
	_ transport.Conn   = (*Conn)(nil)
	_ transport.Stream = (*stream)(nil)
)

// Dial handshakes with recv as local and returns the connection.
func Dial(local transport.Descriptor, recv *transport.Receiver, intercept Interceptor) (*Conn, error) {
	if _, err := recv.Handshake(local); err != nil {
		return nil, err
	}
	return &Conn{recv: recv, intercept: intercept, streams: make(map[*stream]struct{})}, nil
}

// Peer returns the receiver's descriptor.
func (c *Conn) Peer() transport.Descriptor { return c.recv.Descriptor() }

// MaxChunkBytes is unbounded in process.
func (c *Conn) MaxChunkBytes() int { return 1 << 30 }

// Reserve reserves blocks at the receiver.
func (c *Conn) Reserve(ctx context.Context, g transport.Grant, n int) (transport.Lease, error) {
	if err := c.alive(); err != nil {
		return transport.Lease{}, err
	}
	return c.recv.Reserve(ctx, g, n)
}

// Cancel cancels the transfer at the receiver.
func (c *Conn) Cancel(_ context.Context, g transport.Grant, reason string) error {
	if err := c.alive(); err != nil {
		return err
	}
	return c.recv.CancelGrant(g, reason)
}

// OpenStream opens a transfer's stream.
func (c *Conn) OpenStream(_ context.Context, g transport.Grant, dst []int32) (transport.Stream, error) {
	s := &stream{c: c, seq: 1}
	if f := c.fault(1); f == Cut {
		c.Kill()
		return nil, c.alive()
	}
	in, err := c.recv.Open(g, dst, 1)
	if err != nil {
		return nil, err
	}
	s.in = in
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		in.Abort(fmt.Errorf("%w: connection closed", transport.ErrPeerLost))
		return nil, fmt.Errorf("%w: connection closed", transport.ErrPeerLost)
	}
	c.streams[s] = struct{}{}
	return s, nil
}

// Kill simulates the peer dying: every open stream breaks, and the
// receiver sees its transfers' streams end without a commit.
func (c *Conn) Kill() {
	c.mu.Lock()
	c.dead = true
	streams := c.streams
	c.streams = map[*stream]struct{}{}
	c.mu.Unlock()
	for s := range streams {
		s.in.Abort(fmt.Errorf("%w: connection cut", transport.ErrPeerLost))
	}
}

// Close closes the connection, breaking its streams.
func (c *Conn) Close() error {
	c.Kill()
	return nil
}

func (c *Conn) alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return fmt.Errorf("%w: connection closed", transport.ErrPeerLost)
	}
	return nil
}

func (c *Conn) fault(seq uint64) Fault {
	if c.intercept == nil {
		return Deliver
	}
	return c.intercept(seq)
}

// stream delivers frames synchronously; acks queue until Recv.
type stream struct {
	c    *Conn
	in   *transport.Inbound
	seq  uint64
	acks []transport.Ack
	err  error
}

// send numbers a frame, applies the interceptor and delivers it.
func (s *stream) send(ctx context.Context, deliver func(seq uint64, corrupt bool) error) error {
	if s.err != nil {
		return s.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.c.alive(); err != nil {
		s.err = err
		return err
	}
	s.seq++
	fault := s.c.fault(s.seq)
	if fault == Cut {
		s.c.Kill()
		s.err = fmt.Errorf("%w: connection cut", transport.ErrPeerLost)
		return s.err
	}
	err := deliver(s.seq, fault == Corrupt)
	if err == nil && fault == Duplicate {
		err = deliver(s.seq, false)
	}
	if err != nil {
		s.err = err
	}
	return err
}

func (s *stream) SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error {
	data := slices.Concat(segs...)
	return s.send(ctx, func(seq uint64, corrupt bool) error {
		if corrupt {
			data[len(data)/2] ^= 0x40
		}
		return s.in.Chunk(seq, layer, offset, data, crc)
	})
}

func (s *stream) SendLayerEnd(ctx context.Context, layer int) error {
	return s.send(ctx, func(seq uint64, _ bool) error {
		if err := s.in.LayerEnd(seq, layer); err != nil {
			return err
		}
		s.acks = append(s.acks, transport.Ack{Kind: transport.AckLayerDone, Layer: layer})
		return nil
	})
}

func (s *stream) SendCommit(ctx context.Context) error {
	return s.send(ctx, func(seq uint64, _ bool) error {
		blocks, err := s.in.Commit(seq)
		if err != nil {
			return err
		}
		s.acks = append(s.acks, transport.Ack{Kind: transport.AckCommitted, Blocks: blocks})
		return nil
	})
}

func (s *stream) Recv(ctx context.Context) (transport.Ack, error) {
	if len(s.acks) > 0 {
		a := s.acks[0]
		s.acks = s.acks[1:]
		return a, nil
	}
	if s.err != nil {
		return transport.Ack{}, s.err
	}
	if err := ctx.Err(); err != nil {
		return transport.Ack{}, err
	}
	return transport.Ack{}, fmt.Errorf("%w: no acknowledgement pending", transport.ErrProtocol)
}

func (s *stream) Close(cause error) error {
	s.c.mu.Lock()
	delete(s.c.streams, s)
	s.c.mu.Unlock()
	if cause != nil && s.in != nil {
		s.in.Abort(cause)
	}
	return nil
}
