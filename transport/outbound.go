package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"
)

// Conn is a sender's connection to one receiver, made by a backend after a
// successful handshake. Safe for concurrent use.
type Conn interface {
	// Peer is the receiver's descriptor, already checked Compatible.
	Peer() Descriptor
	// MaxChunkBytes is the largest chunk the backend carries; Push clamps
	// the plan's chunk size to it.
	MaxChunkBytes() int
	// Reserve asks the receiver for n destination blocks under a lease.
	Reserve(ctx context.Context, g Grant, n int) (Lease, error)
	// Cancel ends the transfer at the receiver, freeing its blocks.
	Cancel(ctx context.Context, g Grant, reason string) error
	// OpenStream opens the ordered push channel of one transfer.
	OpenStream(ctx context.Context, g Grant, dst []int32) (Stream, error)
	Close() error
}

// AckKind is the type of a receiver acknowledgement.
type AckKind uint8

const (
	// AckLayerDone: layer Layer arrived complete.
	AckLayerDone AckKind = iota + 1
	// AckCommitted: the transfer is ready at the receiver.
	AckCommitted
)

// Ack is one acknowledgement read back from a Stream.
type Ack struct {
	Kind   AckKind
	Layer  int
	Blocks []int32
}

// Stream is one transfer's ordered channel, owned by one goroutine. Frames
// are numbered by the stream in the order sent. The segs of SendChunk stay
// valid and unchanged until the stream is closed (they alias pinned source
// memory or a buffer made for that chunk), so a backend may hand them to an
// asynchronous writer instead of copying. A receiver-side failure surfaces
// as a typed error from the next Send or Recv.
type Stream interface {
	SendChunk(ctx context.Context, layer int, offset uint64, segs [][]byte, crc uint32) error
	SendLayerEnd(ctx context.Context, layer int) error
	SendCommit(ctx context.Context) error
	Recv(ctx context.Context) (Ack, error)
	// Close releases the stream; a non-nil cause aborts the transfer at
	// the receiver. It returns after every goroutine of the stream ended.
	Close(cause error) error
}

// InPlaceStream is a Stream that may write chunks straight into the
// receiver's memory (shared memory; RDMA): InPlace reports whether this one
// does. Nothing crosses a wire then, so Outbound computes no CRC32C and
// passes 0, and commits with SealCommit instead of SendCommit.
type InPlaceStream interface {
	Stream
	InPlace() bool
	// SealCommit commits an in-place transfer one-sided once every layer
	// was written and ended: it seals the lease at the receiver's fence
	// (see Fence), which commits it, then sends the Commit frame without
	// waiting for the answer, and returns the destination blocks. A seal
	// the receiver refused (the lease ended first) returns why.
	SealCommit(ctx context.Context) ([]int32, error)
}

// BlockPair is one (source block, destination block) descriptor.
type BlockPair struct{ Src, Dst int32 }

// cancelTimeout bounds the cancel a failed transfer sends its receiver.
const cancelTimeout = time.Second

// DefaultChunkBytes is the default chunk size: big enough that per-frame
// costs vanish, small enough to keep the pipeline full.
const DefaultChunkBytes = 256 << 10

// Plan describes one transfer from the sender's memory.
type Plan struct {
	Grant Grant
	Pairs []BlockPair
	// ChunkBytes is the payload per chunk; 0 means DefaultChunkBytes.
	ChunkBytes int
	// Release runs exactly once when the transfer ends: with nil after the
	// receiver committed, otherwise with the error that ended it. The
	// sender's owner unpins its source blocks there.
	Release func(err error)
}

// Outbound pushes one transfer. Its methods are called from one goroutine:
// SendLayer for each layer as prefill computes it, then Commit.
type Outbound struct {
	conn  Conn
	s     Stream
	src   Memory
	plan  Plan
	bb    int
	sent  []bool
	nSent int
	// inPlace is the stream when it writes chunks straight into the
	// receiver's memory: no bytes cross a wire, no checksum is computed,
	// and the commit is sealed one-sided.
	inPlace InPlaceStream

	once  sync.Once
	err   error
	ended bool
	block []byte
}

// Push opens a transfer's stream on conn. On error the plan's Release has
// run already.
func Push(ctx context.Context, conn Conn, src Memory, plan Plan) (*Outbound, error) {
	o := &Outbound{conn: conn, src: src, plan: plan, bb: src.Spec().BlockBytes()}
	if o.plan.ChunkBytes == 0 {
		o.plan.ChunkBytes = DefaultChunkBytes
	}
	o.plan.ChunkBytes = min(o.plan.ChunkBytes, conn.MaxChunkBytes())
	if err := o.check(conn.Peer()); err != nil {
		o.finish(err)
		return nil, err
	}
	dst := make([]int32, len(plan.Pairs))
	for i, p := range plan.Pairs {
		dst[i] = p.Dst
	}
	s, err := conn.OpenStream(ctx, plan.Grant, dst)
	if err != nil {
		o.finish(err)
		return nil, err
	}
	o.s = s
	if ip, ok := s.(InPlaceStream); ok && ip.InPlace() {
		o.inPlace = ip
	}
	o.sent = make([]bool, src.Spec().Layers)
	return o, nil
}

func (o *Outbound) check(peer Descriptor) error {
	spec := o.src.Spec()
	if o.plan.ChunkBytes < 0 || len(o.plan.Pairs) == 0 {
		return fmt.Errorf("%w: plan needs block pairs and a non-negative chunk size", ErrInvalid)
	}
	if spec.Layers != peer.Spec.Layers || spec.BlockBytes() != peer.Spec.BlockBytes() {
		return fmt.Errorf("%w: local memory %+v cannot feed peer %+v", ErrIncompatible, spec, peer.Spec)
	}
	for _, p := range o.plan.Pairs {
		if p.Src < 0 || int(p.Src) >= spec.Blocks {
			return fmt.Errorf("%w: source block %d outside 0..%d", ErrInvalid, p.Src, spec.Blocks-1)
		}
	}
	return nil
}

// SendLayer pushes every pair's block of layer. Call it once per layer, in
// any order, as soon as the layer's KV is computed.
func (o *Outbound) SendLayer(ctx context.Context, layer int) error {
	if o.ended {
		return o.err
	}
	if layer < 0 || layer >= len(o.sent) || o.sent[layer] {
		return o.fail(fmt.Errorf("%w: layer %d out of range or sent twice", ErrInvalid, layer))
	}
	total := len(o.plan.Pairs) * o.bb
	chunk := o.plan.ChunkBytes
	if _, host := o.src.Region(layer); o.inPlace != nil && host {
		// Nothing crosses a wire, so the chunk size bounds nothing: one
		// write per layer lets the stream copy runs of adjacent blocks
		// as one.
		chunk = total
	}
	for off := 0; off < total; off += chunk {
		n := min(chunk, total-off)
		segs, err := o.segments(layer, off, n)
		if err != nil {
			return o.fail(err)
		}
		var crc uint32
		if o.inPlace == nil {
			for _, s := range segs {
				crc = crc32.Update(crc, castagnoli, s)
			}
		}
		if err := o.s.SendChunk(ctx, layer, uint64(off), segs, crc); err != nil {
			return o.fail(err)
		}
	}
	if err := o.s.SendLayerEnd(ctx, layer); err != nil {
		return o.fail(err)
	}
	o.sent[layer] = true
	o.nSent++
	return nil
}

// Commit sends the commit after the last layer and waits, bounded by ctx,
// for the receiver's verdict on the same stream; an in-place transfer is
// sealed instead, which commits it without a round trip. It returns the
// destination blocks the receiver now holds ready.
func (o *Outbound) Commit(ctx context.Context) ([]int32, error) {
	if o.ended {
		return nil, o.err
	}
	if o.nSent != len(o.sent) {
		return nil, o.fail(fmt.Errorf("%w: commit after %d of %d layers", ErrInvalid, o.nSent, len(o.sent)))
	}
	if o.inPlace != nil {
		blocks, err := o.inPlace.SealCommit(ctx)
		if err != nil {
			return nil, o.fail(err)
		}
		o.finish(nil)
		return blocks, nil
	}
	if err := o.s.SendCommit(ctx); err != nil {
		return nil, o.fail(err)
	}
	layers := 0
	for {
		ack, err := o.s.Recv(ctx)
		if err != nil {
			return nil, o.fail(err)
		}
		switch {
		case ack.Kind == AckLayerDone:
			layers++
		case ack.Kind == AckCommitted && layers == len(o.sent):
			o.finish(nil)
			return ack.Blocks, nil
		default:
			return nil, o.fail(fmt.Errorf("%w: acknowledgement %d after %d layer acks", ErrProtocol, ack.Kind, layers))
		}
	}
}

// Abort ends the transfer with cause, telling the receiver to free.
func (o *Outbound) Abort(cause error) {
	if cause == nil {
		cause = ErrCancelled
	}
	_ = o.fail(cause)
}

func (o *Outbound) fail(err error) error {
	if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		err = fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	o.finish(err)
	return o.err
}

// finish ends the transfer once: the stream closes (aborting the receiver
// side on error) and Release runs.
func (o *Outbound) finish(err error) {
	o.once.Do(func() {
		o.ended, o.err = true, err
		if err == nil {
			o.err = fmt.Errorf("%w: transfer %q already committed", ErrClosed, o.plan.Grant.TransferID)
		}
		if o.s != nil {
			_ = o.s.Close(err)
		}
		if err != nil && o.conn != nil {
			// The receiver may never have seen the stream (it failed
			// before the Open arrived): cancel explicitly so its blocks
			// are freed now, not at lease expiry. Best effort and bounded;
			// a receiver that already ended the transfer just refuses.
			ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
			_ = o.conn.Cancel(ctx, o.plan.Grant, err.Error())
			cancel()
		}
		if o.plan.Release != nil {
			o.plan.Release(err)
		}
	})
}

// segments returns payload bytes [off, off+n) of layer. With host memory
// they alias the region, merging neighbouring source blocks, so sending
// copies nothing here; device memory is read into a fresh gather buffer.
func (o *Outbound) segments(layer, off, n int) ([][]byte, error) {
	region, host := o.src.Region(layer)
	var segs [][]byte
	var gather []byte
	if !host {
		gather = make([]byte, n) // per chunk: a backend may still be reading the last one
	}
	lastEnd := -1
	for pos := off; pos < off+n; {
		idx, within := pos/o.bb, pos%o.bb
		m := min(o.bb-within, off+n-pos)
		src := int(o.plan.Pairs[idx].Src)
		if host {
			start := src*o.bb + within
			if start == lastEnd {
				last := segs[len(segs)-1]
				segs[len(segs)-1] = region[start-len(last) : start+m]
			} else {
				segs = append(segs, region[start:start+m])
			}
			lastEnd = start + m
		} else {
			if o.block == nil {
				o.block = make([]byte, o.bb)
			}
			if err := o.src.ReadBlock(layer, src, o.block); err != nil {
				return nil, fmt.Errorf("transport: reading block %d of layer %d: %w", src, layer, err)
			}
			copy(gather[pos-off:], o.block[within:within+m])
		}
		pos += m
	}
	if !host {
		segs = [][]byte{gather}
	}
	return segs, nil
}

// RecvAck is the Recv of a backend stream whose reader goroutine queues
// acknowledgements on acks and closes ended when the stream ends (err then
// reads the reason). Acks queued before the end are still delivered, in
// order; onCancel (may be nil) runs when ctx ends the wait.
func RecvAck(ctx context.Context, acks <-chan Ack, ended <-chan struct{}, err func() error, onCancel func()) (Ack, error) {
	select {
	case a := <-acks:
		return a, nil
	default:
	}
	select {
	case a := <-acks:
		return a, nil
	case <-ended:
		select {
		case a := <-acks:
			return a, nil
		default:
			return Ack{}, err()
		}
	case <-ctx.Done():
		if onCancel != nil {
			onCancel()
		}
		return Ack{}, ctx.Err()
	}
}
