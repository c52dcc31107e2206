package transport

import (
	"fmt"
	"hash/crc32"
)

// castagnoli is the CRC32C table; crc32 uses the SSE4.2 instruction for it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC32C of data, as carried by every chunk.
func Checksum(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// Inbound is the receiving end of one transfer's stream. A backend feeds it
// the stream's frames in order from a single goroutine. Any error a method
// returns has already ended the transfer and freed its blocks; the backend
// reports it to the sender and closes the stream.
type Inbound struct {
	r       *Receiver
	l       *lease
	dst     []int32
	bb      int
	layer   []uint64 // bytes received per layer
	ended   []bool
	nEnded  int
	nextSeq uint64
	// staging assembles one block for memory without host regions; a
	// partly filled block belongs to layer staged (-1 when none).
	staging []byte
	staged  int
	inPlace bool // the sender writes the blocks itself (OpenInPlace)
}

// Open attaches a stream to a reserved transfer. dst lists leased blocks in
// payload order: layer L's payload is the concatenation of those blocks'
// bytes for L. firstSeq is the sequence number of the Open frame itself.
func (r *Receiver) Open(g Grant, dst []int32, firstSeq uint64) (*Inbound, error) {
	return r.open(g, dst, firstSeq, false)
}

// OpenInPlace is Open for a sender that writes the payload straight into the
// leased blocks, holding the lease's fence key (see Fence): no chunks follow,
// only LayerEnds and the Commit, which disarms the blocks before they are
// ready. It needs a receiver with a fence.
func (r *Receiver) OpenInPlace(g Grant, dst []int32, firstSeq uint64) (*Inbound, error) {
	if r.cfg.Fence == nil {
		return nil, fmt.Errorf("%w: in-place transfer to a receiver without a fence", ErrProtocol)
	}
	return r.open(g, dst, firstSeq, true)
}

func (r *Receiver) open(g Grant, dst []int32, firstSeq uint64, inPlace bool) (*Inbound, error) {
	if err := verifyGrant(r.cfg.Secret, g, r.cfg.Local.NodeID, r.cfg.Clock.Now()); err != nil {
		return nil, err
	}
	l, err := r.lookup(g.TransferID, g.Epoch)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Inbound, error) {
		r.end(l, stateFreed, err, nil)
		return nil, err
	}
	l.mu.Lock()
	switch l.state {
	case stateReserved:
	case stateAllocating:
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: transfer %q is still reserving", ErrProtocol, g.TransferID)
	case stateStreaming:
		l.mu.Unlock()
		return fail(fmt.Errorf("%w: transfer %q opened twice", ErrProtocol, g.TransferID))
	case stateReady:
		// Committed already, by its sender's seal before this Open was
		// read (see Fence), or opened before: the owner's blocks stay put.
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: transfer %q already committed", ErrProtocol, g.TransferID)
	default:
		l.mu.Unlock()
		return nil, r.endedError(l)
	}
	if len(dst) == 0 || len(dst) > len(l.blocks) {
		l.mu.Unlock()
		return fail(fmt.Errorf("%w: %d destination blocks for a lease of %d", ErrProtocol, len(dst), len(l.blocks)))
	}
	seen := make(map[int32]struct{}, len(dst))
	for _, b := range dst {
		_, owned := l.owned[b]
		_, dup := seen[b]
		if !owned || dup {
			l.mu.Unlock()
			return fail(fmt.Errorf("%w: block %d is not leased to transfer %q or repeats", ErrProtocol, b, g.TransferID))
		}
		seen[b] = struct{}{}
	}
	l.state = stateStreaming
	l.expiry = r.cfg.Clock.Now().Add(r.cfg.LeaseTTL)
	l.mu.Unlock()
	layers := r.cfg.Local.Spec.Layers
	return &Inbound{
		r: r, l: l, dst: append([]int32(nil), dst...), bb: r.cfg.Local.Spec.BlockBytes(),
		layer: make([]uint64, layers), ended: make([]bool, layers), nextSeq: firstSeq + 1,
		staged: -1, inPlace: inPlace,
	}, nil
}

// TransferID names the transfer.
func (in *Inbound) TransferID() string { return in.l.grant.TransferID }

// Chunk applies payload bytes [offset, offset+len(data)) of layer. Chunks of
// a layer must arrive in payload order.
func (in *Inbound) Chunk(seq uint64, layer int, offset uint64, data []byte, crc uint32) error {
	return in.guard(seq, func() error { return in.chunkLocked(layer, offset, data, crc) })
}

// LayerEnd checks that every byte of layer arrived; the backend then
// acknowledges the layer.
func (in *Inbound) LayerEnd(seq uint64, layer int) error {
	return in.guard(seq, func() error {
		if err := in.checkLayer(layer); err != nil {
			return err
		}
		want := uint64(len(in.dst) * in.bb)
		if in.inPlace {
			// The bytes are already in place: the sender wrote them
			// holding the fence key, which is what admits them.
			in.layer[layer] = want
			in.l.bytes += want
			in.l.expiry = in.r.cfg.Clock.Now().Add(in.r.cfg.LeaseTTL)
		}
		if in.layer[layer] != want {
			return fmt.Errorf("%w: layer %d ended after %d of %d bytes", ErrProtocol, layer, in.layer[layer], want)
		}
		in.ended[layer] = true
		in.nEnded++
		return nil
	})
}

// Commit marks the transfer ready once every layer has ended; the blocks
// then wait for the receiver's owner to claim them with Receiver.Ready.
func (in *Inbound) Commit(seq uint64) ([]int32, error) {
	err := in.guard(seq, func() error {
		if in.nEnded != len(in.ended) {
			return fmt.Errorf("%w: commit after %d of %d layers", ErrProtocol, in.nEnded, len(in.ended))
		}
		// Ready blocks belong to the owner alone: close them to writers
		// first. A correct sender finished every write before its commit,
		// and an in-place one sealed the lease before sending it.
		if in.l.key != 0 {
			if sealed := in.r.cfg.Fence.Decide(in.l.blocks[0], in.l.key); in.inPlace && !sealed {
				return fmt.Errorf("%w: in-place commit of a lease its sender did not seal", ErrProtocol)
			}
			if stuck := in.r.cfg.Fence.Disarm(in.l.blocks, in.l.key); len(stuck) > 0 {
				return fmt.Errorf("%w: %d blocks still being written at commit", ErrProtocol, len(stuck))
			}
		}
		in.l.state = stateReady
		in.l.expiry = in.r.cfg.Clock.Now().Add(in.r.cfg.LeaseTTL)
		in.l.settleLocked()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append([]int32(nil), in.dst...), nil
}

// Abort ends a transfer whose stream broke before its commit; a transfer
// already committed stays ready for its owner.
func (in *Inbound) Abort(cause error) {
	in.r.lose(in.l, cause, func() bool { return in.l.state != stateReady })
}

// guard runs f under the lease lock while the transfer is streaming, after
// checking the frame's sequence number, and fails the transfer on error.
func (in *Inbound) guard(seq uint64, f func() error) error {
	in.l.mu.Lock()
	var err error
	switch {
	case in.l.state != stateStreaming:
		in.l.mu.Unlock()
		return in.r.endedError(in.l)
	case seq < in.nextSeq:
		err = fmt.Errorf("%w: frame %d, expected %d", ErrDuplicateChunk, seq, in.nextSeq)
	case seq > in.nextSeq:
		err = fmt.Errorf("%w: frame %d arrived before %d", ErrProtocol, seq, in.nextSeq)
	default:
		in.nextSeq++
		err = f()
	}
	in.l.mu.Unlock()
	if err != nil {
		in.r.end(in.l, stateFreed, err, nil)
	}
	return err
}

func (in *Inbound) checkLayer(layer int) error {
	switch {
	case layer < 0 || layer >= len(in.ended):
		return fmt.Errorf("%w: layer %d of %d", ErrProtocol, layer, len(in.ended))
	case in.ended[layer]:
		return fmt.Errorf("%w: layer %d already ended", ErrDuplicateChunk, layer)
	}
	return nil
}

// chunkLocked validates and writes one chunk; in.l.mu is held, so the
// lease cannot be freed (and its blocks reused) while bytes land.
func (in *Inbound) chunkLocked(layer int, offset uint64, data []byte, crc uint32) error {
	if err := in.checkLayer(layer); err != nil {
		return err
	}
	if in.inPlace {
		return fmt.Errorf("%w: chunk on an in-place transfer", ErrProtocol)
	}
	total := uint64(len(in.dst) * in.bb)
	switch got := in.layer[layer]; {
	case len(data) == 0:
		return fmt.Errorf("%w: empty chunk", ErrProtocol)
	case offset < got:
		return fmt.Errorf("%w: layer %d offset %d already received (have %d bytes)", ErrDuplicateChunk, layer, offset, got)
	case offset > got:
		return fmt.Errorf("%w: layer %d offset %d leaves a gap after %d bytes", ErrProtocol, layer, offset, got)
	case offset+uint64(len(data)) > total:
		return fmt.Errorf("%w: layer %d chunk ends at %d past payload of %d", ErrProtocol, layer, offset+uint64(len(data)), total)
	}
	region, host := in.r.mem.Region(layer)
	if !host && in.staged >= 0 && in.staged != layer {
		return fmt.Errorf("%w: layer %d chunk interleaved with a partial block of layer %d", ErrProtocol, layer, in.staged)
	}
	// The checksum is computed block by block as each piece is copied, so
	// the copy reads bytes the checksum just brought into L1 instead of
	// making a second pass over the chunk. The bytes land before they are
	// verified, but only in this lease's own blocks, which a mismatch frees
	// without ever making them ready.
	var sum uint32
	for off, rest := offset, data; len(rest) > 0; {
		idx, within := int(off)/in.bb, int(off)%in.bb
		n := min(in.bb-within, len(rest))
		blk := int(in.dst[idx])
		sum = crc32.Update(sum, castagnoli, rest[:n])
		if host {
			copy(region[blk*in.bb+within:], rest[:n])
		} else {
			if in.staging == nil {
				in.staging = make([]byte, in.bb)
			}
			copy(in.staging[within:], rest[:n])
			if within+n == in.bb {
				if err := in.r.mem.WriteBlock(layer, blk, in.staging); err != nil {
					return fmt.Errorf("transport: writing block %d of layer %d: %w", blk, layer, err)
				}
			}
		}
		off += uint64(n)
		rest = rest[n:]
	}
	if sum != crc {
		return fmt.Errorf("%w: layer %d offset %d: crc32c %08x, frame says %08x", ErrChecksum, layer, offset, sum, crc)
	}
	in.layer[layer] += uint64(len(data))
	in.l.bytes += uint64(len(data))
	if in.staged = -1; in.layer[layer]%uint64(in.bb) != 0 {
		in.staged = layer
	}
	in.l.expiry = in.r.cfg.Clock.Now().Add(in.r.cfg.LeaseTTL)
	return nil
}
