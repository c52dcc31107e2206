package shm

import (
	"fmt"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// push serves one transfer's stream: the staging segment's descriptor came
// with the StartPush message; frames follow, the first an Open.
func (h *conn) push(start *transportv1.StartPush) error {
	if start.GetInPlace() {
		return h.pushInPlace()
	}
	if !start.GetReuse() {
		fds, err := h.r.takeFDs(1)
		if err != nil {
			return err
		}
		fd := fds[0]
		if h.seg != nil {
			h.seg.close()
			h.seg = nil
		}
		if h.seg, err = openSegment(fd, int(start.GetSlots()), int(start.GetSlotBytes())); err != nil {
			return err
		}
	} else if h.seg == nil {
		return fmt.Errorf("%w: shm: reuse without a previous segment", transport.ErrProtocol)
	}
	seg := h.seg
	req := new(transportv1.ShmRequest)
	in, err := h.open(req, h.s.recv.Open)
	if err != nil {
		return err
	}
	if err := h.pump(in, seg, req); err != nil {
		in.Abort(err)
		return err
	}
	return nil
}

// pushInPlace serves a transfer whose sender writes the leased blocks
// itself through the mapped KV file: only Open, LayerEnds and Commit arrive.
func (h *conn) pushInPlace() error {
	req := new(transportv1.ShmRequest)
	in, err := h.open(req, h.s.recv.OpenInPlace)
	if err != nil {
		return err
	}
	if err := h.pump(in, nil, req); err != nil {
		in.Abort(err)
		return err
	}
	return nil
}

// open reads the stream's first frame, which must be its Open, and attaches
// it to the reserved transfer.
func (h *conn) open(req *transportv1.ShmRequest, open func(transport.Grant, []int32, uint64) (*transport.Inbound, error)) (*transport.Inbound, error) {
	if err := h.r.read(req); err != nil {
		return nil, fmt.Errorf("%w: shm: stream ended before open: %w", transport.ErrProtocol, err)
	}
	first := req.GetFrame()
	if first.GetOpen() == nil || first.GetSeq() != 1 {
		return nil, fmt.Errorf("%w: shm: first frame must be open with seq 1", transport.ErrProtocol)
	}
	g, err := wire.FromGrant(first.GetOpen().GetGrant())
	if err != nil {
		return nil, err
	}
	h.s.opened(g.TransferID)
	return open(g, first.GetOpen().GetDstBlocks(), 1)
}

// pump applies frames until the commit; every chunk's slot goes back to
// the sender once its bytes are in the KV region. An in-place stream (seg
// nil) is answered only with a failure: its sender committed by sealing the
// lease and reads nothing, so the connection is ready for its next push as
// soon as the commit frame is read.
func (h *conn) pump(in *transport.Inbound, seg *segment, req *transportv1.ShmRequest) error {
	ack := new(transportv1.ShmResponse)
	for {
		req.Reset()
		if err := h.r.read(req); err != nil {
			return fmt.Errorf("%w: shm: stream broke before commit: %w", transport.ErrPeerLost, err)
		}
		f := req.GetFrame()
		if f == nil {
			return fmt.Errorf("%w: shm: expected a frame", transport.ErrProtocol)
		}
		var a *transportv1.Ack
		switch k := f.GetKind().(type) {
		case *transportv1.Frame_ShmChunk:
			c := k.ShmChunk
			slot, n := int(c.GetSlot()), int(c.GetLength())
			if seg == nil {
				return fmt.Errorf("%w: shm: staged chunk on an in-place stream", transport.ErrProtocol)
			}
			if c.GetSlot() >= uint32(seg.slots) || c.GetLength() > uint32(seg.slot) || n == 0 {
				return fmt.Errorf("%w: shm: slot %d length %d outside %d slots of %d bytes", transport.ErrProtocol, c.GetSlot(), c.GetLength(), seg.slots, seg.slot)
			}
			layer, err := wire.Layer(c.GetLayer())
			if err != nil {
				return err
			}
			if err := in.Chunk(f.GetSeq(), layer, c.GetOffset(), seg.bytes(slot, n), c.GetCrc32C()); err != nil {
				return err
			}
			a = &transportv1.Ack{Kind: &transportv1.Ack_SlotFree{SlotFree: &transportv1.SlotFree{Slot: c.GetSlot()}}}
		case *transportv1.Frame_LayerEnd:
			layer, err := wire.Layer(k.LayerEnd.GetLayer())
			if err != nil {
				return err
			}
			if err := in.LayerEnd(f.GetSeq(), layer); err != nil {
				return err
			}
			a = &transportv1.Ack{Kind: &transportv1.Ack_LayerDone{LayerDone: &transportv1.LayerDone{Layer: k.LayerEnd.GetLayer()}}}
		case *transportv1.Frame_Commit:
			blocks, err := in.Commit(f.GetSeq())
			if err != nil {
				return err
			}
			a = &transportv1.Ack{Kind: &transportv1.Ack_Committed{Committed: &transportv1.Committed{Blocks: blocks}}}
		default:
			return fmt.Errorf("%w: shm: unexpected frame %T", transport.ErrProtocol, k)
		}
		if seg == nil {
			if a.GetCommitted() != nil {
				return nil
			}
			continue
		}
		ack.Kind = &transportv1.ShmResponse_Ack{Ack: a}
		if err := h.ack(ack); err != nil {
			return err
		}
		if a.GetCommitted() != nil {
			return nil
		}
	}
}
