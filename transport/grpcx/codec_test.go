package grpcx

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
)

// The copy-free chunk encoding must be byte-compatible with protobuf in
// both directions.
func TestCodec_ChunkMatchesProtobuf(t *testing.T) {
	c := newCodec()
	tests := []struct {
		name string
		out  outChunk
	}{
		{"zero fields omitted", outChunk{seq: 0, segs: [][]byte{[]byte("x")}}},
		{"one segment", outChunk{seq: 7, layer: 3, offset: 1 << 20, segs: [][]byte{bytes.Repeat([]byte{9}, 300)}, crc: 0xdeadbeef}},
		{"several segments", outChunk{seq: 1 << 40, layer: 29, offset: 5, segs: [][]byte{[]byte("ab"), []byte("cde"), bytes.Repeat([]byte{1}, 200)}, crc: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := c.Marshal(&tc.out)
			if err != nil {
				t.Fatal(err)
			}
			wire := bs.Materialize()
			var want transportv1.Frame
			if err := proto.Unmarshal(wire, &want); err != nil {
				t.Fatalf("stock protobuf cannot read the frame: %v", err)
			}
			ch := want.GetChunk()
			if want.GetSeq() != tc.out.seq || ch.GetLayer() != tc.out.layer || ch.GetOffset() != tc.out.offset ||
				ch.GetCrc32C() != tc.out.crc || !bytes.Equal(ch.GetData(), bytes.Join(tc.out.segs, nil)) {
				t.Fatalf("protobuf read %v", &want)
			}
			std, err := proto.Marshal(&want)
			if err != nil {
				t.Fatal(err)
			}
			var in inFrame
			if err := parseFrame(std, &in); err != nil {
				t.Fatal(err)
			}
			if !in.chunk || in.seq != tc.out.seq || in.layer != tc.out.layer || in.offset != tc.out.offset ||
				in.crc != tc.out.crc || !bytes.Equal(in.data, ch.GetData()) {
				t.Fatalf("parseFrame read seq %d chunk %v layer %d offset %d crc %x", in.seq, in.chunk, in.layer, in.offset, in.crc)
			}
		})
	}
}

// FuzzParseFrame feeds arbitrary bytes to the receive path: it must never
// panic, and whenever protobuf accepts the bytes as a chunk frame the fast
// parser must read the same fields.
func FuzzParseFrame(f *testing.F) {
	seeds := []*transportv1.Frame{
		{Seq: 1, Kind: &transportv1.Frame_Chunk{Chunk: &transportv1.Chunk{Layer: 2, Offset: 4096, Data: []byte("payload"), Crc32C: 77}}},
		{Seq: 2, Kind: &transportv1.Frame_LayerEnd{LayerEnd: &transportv1.LayerEnd{Layer: 1}}},
		{Seq: 3, Kind: &transportv1.Frame_Commit{Commit: &transportv1.Commit{}}},
		{Seq: 1, Kind: &transportv1.Frame_Open{Open: &transportv1.Open{DstBlocks: []int32{1, 2}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var in inFrame
		perr := parseFrame(b, &in)
		var ref transportv1.Frame
		if proto.Unmarshal(b, &ref) != nil {
			return
		}
		if perr != nil {
			t.Fatalf("protobuf accepts %x but parseFrame fails: %v", b, perr)
		}
		if in.seq != ref.GetSeq() {
			t.Fatalf("seq %d, protobuf %d", in.seq, ref.GetSeq())
		}
		if in.chunk {
			ch := ref.GetChunk()
			if ch == nil || in.layer != ch.GetLayer() || in.offset != ch.GetOffset() || in.crc != ch.GetCrc32C() || !bytes.Equal(in.data, ch.GetData()) {
				t.Fatalf("fast parse layer %d offset %d crc %x, protobuf %v", in.layer, in.offset, in.crc, &ref)
			}
		}
	})
}
