package transport_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// FuzzInbound plays arbitrary frame sequences, as a hostile or broken
// sender could, against a receiving transfer. Whatever arrives, nothing may
// panic, a refused frame must end the transfer, and the transfer's blocks
// must come back exactly once.
func FuzzInbound(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0x08, 0x00, 1, 0, 2})
	f.Add([]byte{0, 1, 0, 0, 0x04, 0x00, 0, 1, 0, 0x04, 0x00, 0x04, 0x00, 1, 1})
	f.Add([]byte{3, 0, 2, 9, 9, 9})
	f.Fuzz(func(t *testing.T, prog []byte) {
		spec := transporttest.Spec()
		alloc := transporttest.NewAllocator(spec.Blocks)
		mem, err := transport.NewHostMemory(spec)
		if err != nil {
			t.Fatal(err)
		}
		cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
		cfg.Secret = transporttest.Secret
		recv, err := transport.NewReceiver(cfg, mem, alloc)
		if err != nil {
			t.Fatal(err)
		}
		g := transporttest.Grant(t, "fz", 1, "decode-1", time.Now())
		lease, err := recv.Reserve(context.Background(), g, 2)
		if err != nil {
			t.Fatal(err)
		}
		in, err := recv.Open(g, lease.Blocks, 1)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 4096)
		seq := uint64(2)
		failed := false
		for len(prog) >= 3 && !failed {
			op, layer := prog[0]%4, int(prog[1]%5)
			prog = prog[2:]
			var ferr error
			switch op {
			case 0: // chunk: offset and length from the next 4 bytes
				if len(prog) < 4 {
					return
				}
				off := uint64(binary.LittleEndian.Uint16(prog))
				n := int(binary.LittleEndian.Uint16(prog[2:])) % len(payload)
				prog = prog[4:]
				data := payload[:n]
				crc := transport.Checksum(data)
				if layer == 4 {
					crc ^= 1
				}
				ferr = in.Chunk(seq, layer, off, data, crc)
			case 1:
				ferr = in.LayerEnd(seq, layer)
			case 2:
				_, ferr = in.Commit(seq)
			case 3: // replay or skip a sequence number
				ferr = in.LayerEnd(seq-uint64(layer%2)+uint64(layer/2), layer)
			}
			seq++
			failed = ferr != nil
		}
		if failed {
			if st := alloc.Stats(); st.InUse != 0 || st.Frees != 1 {
				t.Fatalf("a refused frame left blocks held: %+v", st)
			}
		}
		recv.Close()
		if st := alloc.Stats(); len(st.Errors) > 0 || st.InUse != 0 || st.Frees != 1 {
			t.Fatalf("blocks not returned exactly once: %+v", st)
		}
	})
}
