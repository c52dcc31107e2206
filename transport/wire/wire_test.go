package wire

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tandemserve/tandem/kernels"
	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
)

func testDescriptor() transport.Descriptor {
	return transport.Descriptor{NodeID: "n", ModelID: "m", Layout: transport.LayoutKThenV, HostID: "h",
		Spec: kernels.KVSpec{Layers: 2, Blocks: 8, BlockSize: 16, KVHeads: 3, HeadDim: 64, DType: kernels.KVInt8}}
}

func TestDescriptor_RoundTrip(t *testing.T) {
	d := testDescriptor()
	got, err := FromDescriptor(Descriptor(d))
	if err != nil {
		t.Fatal(err)
	}
	if got != d {
		t.Fatalf("round trip %+v, want %+v", got, d)
	}
}

func TestFromDescriptor_Refusals(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*transportv1.Descriptor)
		want   error
	}{
		{"missing spec", func(m *transportv1.Descriptor) { m.Spec = nil }, transport.ErrProtocol},
		{"unknown dtype", func(m *transportv1.Descriptor) { m.Spec.Dtype = "f8" }, transport.ErrIncompatible},
		{"zero layers", func(m *transportv1.Descriptor) { m.Spec.Layers = 0 }, transport.ErrInvalid},
		{"block bytes disagree", func(m *transportv1.Descriptor) { m.BlockBytes++ }, transport.ErrIncompatible},
		{"no model", func(m *transportv1.Descriptor) { m.ModelId = "" }, transport.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := Descriptor(testDescriptor())
			tc.mutate(m)
			if _, err := FromDescriptor(m); !errors.Is(err, tc.want) {
				t.Fatalf("FromDescriptor = %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzFromDescriptor decodes arbitrary bytes as a peer's handshake: a
// descriptor that passes must be valid, and nothing may panic.
func FuzzFromDescriptor(f *testing.F) {
	b, err := proto.Marshal(&transportv1.HandshakeRequest{Sender: Descriptor(testDescriptor())})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{0x0a, 0x02, 0x1a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m transportv1.HandshakeRequest
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		d, err := FromDescriptor(m.GetSender())
		if err == nil {
			if verr := d.Validate(); verr != nil {
				t.Fatalf("accepted an invalid descriptor: %v", verr)
			}
		}
		if g, err := FromGrant(&transportv1.Grant{Token: []byte(m.GetSender().GetHostId())}); err == nil && len(g.Token) > maxTokenBytes {
			t.Fatal("oversized token accepted")
		}
	})
}
