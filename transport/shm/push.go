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
	if !start.GetReuse() {
		fd, err := h.r.takeFD()
		if err != nil {
			return err
		}
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
	if err := h.r.read(req); err != nil {
		return fmt.Errorf("%w: shm: stream ended before open: %w", transport.ErrProtocol, err)
	}
	first := req.GetFrame()
	if first.GetOpen() == nil || first.GetSeq() != 1 {
		return fmt.Errorf("%w: shm: first frame must be open with seq 1", transport.ErrProtocol)
	}
	g, err := wire.FromGrant(first.GetOpen().GetGrant())
	if err != nil {
		return err
	}
	in, err := h.s.recv.Open(g, first.GetOpen().GetDstBlocks(), 1)
	if err != nil {
		return err
	}
	if err := h.pump(in, seg, req); err != nil {
		in.Abort(err)
		return err
	}
	return nil
}

// pump applies frames until the commit; every chunk's slot goes back to
// the sender once its bytes are in the KV region.
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
		ack.Kind = &transportv1.ShmResponse_Ack{Ack: a}
		if err := h.reply(ack); err != nil {
			return err
		}
		if a.GetCommitted() != nil {
			return nil
		}
	}
}
