package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
)

// FuzzDecode drives the control-channel decoder with arbitrary bytes: it
// must return a message or an error, never panic or allocate past the cap.
func FuzzDecode(f *testing.F) {
	for _, m := range []proto.Message{
		&transportv1.ShmRequest{Kind: &transportv1.ShmRequest_StartPush{StartPush: &transportv1.StartPush{Slots: 4, SlotBytes: 1 << 20}}},
		&transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Frame{Frame: &transportv1.Frame{Seq: 2, Kind: &transportv1.Frame_ShmChunk{ShmChunk: &transportv1.ShmChunk{Slot: 1, Length: 10, Crc32C: 5}}}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var buf []byte
		var m transportv1.ShmRequest
		err := decode(bytes.NewReader(b), &buf, &m)
		if len(b) >= 4 && binary.BigEndian.Uint32(b) > maxMessage && !errors.Is(err, transport.ErrProtocol) {
			t.Fatalf("oversized length accepted: %v", err)
		}
		if cap(buf) > maxMessage {
			t.Fatalf("decoder buffer grew to %d", cap(buf))
		}
	})
}
