package grpcx

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec delegated to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
)

// codec is the standard protobuf codec with a copy-free path for chunks.
// The bytes on the wire are ordinary tandem.transport.v1.Frame messages;
// only how they are built and read differs:
//   - a sent chunk's payload is not marshalled: the message is a header, the
//     payload segments (aliasing the sender's pinned KV memory, which stays
//     unchanged until the transfer's Release) and a trailer, handed to gRPC
//     as one buffer slice;
//   - a received chunk is copied once, into a per-stream buffer, and its
//     payload is a sub-slice of it rather than a second copy.
//
// Everything else goes to the registered "proto" codec.
type codec struct{ std encoding.CodecV2 }

var _ encoding.CodecV2 = codec{}

func newCodec() codec { return codec{std: encoding.GetCodecV2("proto")} }

// Name keeps the standard content-subtype, so peers using the stock codec
// interoperate.
func (codec) Name() string { return "proto" }

// outChunk is a chunk frame to send without copying its payload. segs must
// stay unchanged until gRPC releases them (track counts them): gRPC reads
// them after SendMsg returns.
type outChunk struct {
	seq    uint64
	layer  uint32
	offset uint64
	segs   [][]byte
	crc    uint32
	track  *inflight
}

// inFrame receives one frame. scratch is reused across frames (the server
// lends one per transfer); data aliases it and is valid until the next
// RecvMsg.
type inFrame struct {
	scratch []byte
	seq     uint64
	chunk   bool // data, layer, offset and crc are set; msg is not
	layer   uint32
	offset  uint64
	data    []byte
	crc     uint32
	msg     transportv1.Frame
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	o, ok := v.(*outChunk)
	if !ok {
		return c.std.Marshal(v)
	}
	n := 0
	for _, s := range o.segs {
		n += len(s)
	}
	// Chunk body: layer (1), offset (2), data (3), crc32c (4); proto3 omits zeros.
	body := 0
	if o.layer != 0 {
		body += 1 + protowire.SizeVarint(uint64(o.layer))
	}
	if o.offset != 0 {
		body += 1 + protowire.SizeVarint(o.offset)
	}
	body += 1 + protowire.SizeVarint(uint64(n)) + n
	if o.crc != 0 {
		body += 5
	}
	// gRPC writes the buffers after SendMsg returns, so the header and
	// trailer are fresh for every message, never reused.
	h := make([]byte, 0, 32)
	if o.seq != 0 {
		h = protowire.AppendTag(h, 1, protowire.VarintType)
		h = protowire.AppendVarint(h, o.seq)
	}
	h = protowire.AppendTag(h, 3, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(body))
	if o.layer != 0 {
		h = protowire.AppendTag(h, 1, protowire.VarintType)
		h = protowire.AppendVarint(h, uint64(o.layer))
	}
	if o.offset != 0 {
		h = protowire.AppendTag(h, 2, protowire.VarintType)
		h = protowire.AppendVarint(h, o.offset)
	}
	h = protowire.AppendTag(h, 3, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(n))
	out := make(mem.BufferSlice, 0, len(o.segs)+2)
	out = append(out, mem.SliceBuffer(h))
	for _, s := range o.segs {
		out = append(out, o.track.wrap(s))
	}
	if o.crc != 0 {
		t := protowire.AppendTag(make([]byte, 0, 5), 4, protowire.Fixed32Type)
		t = protowire.AppendFixed32(t, o.crc)
		out = append(out, mem.SliceBuffer(t))
	}
	return out, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return c.std.Unmarshal(data, v)
	}
	n := data.Len()
	if cap(f.scratch) < n {
		f.scratch = make([]byte, n)
	}
	b := f.scratch[:n]
	data.CopyTo(b)
	return parseFrame(b, f)
}

// parseFrame decodes b into f. A frame holding only seq and chunk fields is
// read in place; any other frame goes through proto.Unmarshal.
func parseFrame(b []byte, f *inFrame) error {
	f.chunk, f.seq, f.layer, f.offset, f.data, f.crc = false, 0, 0, 0, nil, 0
	rest := b
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return malformed(n)
		}
		rest = rest[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(rest)
			if m < 0 {
				return malformed(m)
			}
			f.seq, rest = v, rest[m:]
		case num == 3 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(rest)
			if m < 0 {
				return malformed(m)
			}
			if !f.chunk { // repeated occurrences merge, as in proto
				f.layer, f.offset, f.data, f.crc = 0, 0, nil, 0
			}
			if err := parseChunk(v, f); err != nil {
				return err
			}
			f.chunk, rest = true, rest[m:]
		default:
			f.chunk = false
			f.msg.Reset()
			if err := proto.Unmarshal(b, &f.msg); err != nil {
				return fmt.Errorf("%w: grpcx: frame: %w", transport.ErrProtocol, err)
			}
			f.seq = f.msg.GetSeq()
			return nil
		}
	}
	if !f.chunk {
		f.msg.Reset()
		f.msg.Seq = f.seq
	}
	return nil
}

// parseChunk reads a Chunk body into f; for each field the last occurrence
// wins, as in proto.
func parseChunk(b []byte, f *inFrame) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed(n)
		}
		b = b[n:]
		var m int
		switch {
		case num == 1 && typ == protowire.VarintType:
			var v uint64
			v, m = protowire.ConsumeVarint(b)
			f.layer = uint32(v)
		case num == 2 && typ == protowire.VarintType:
			f.offset, m = protowire.ConsumeVarint(b)
		case num == 3 && typ == protowire.BytesType:
			f.data, m = protowire.ConsumeBytes(b)
		case num == 4 && typ == protowire.Fixed32Type:
			f.crc, m = protowire.ConsumeFixed32(b)
		default:
			m = protowire.ConsumeFieldValue(num, typ, b)
		}
		if m < 0 {
			return malformed(m)
		}
		b = b[m:]
	}
	return nil
}

func malformed(n int) error {
	return fmt.Errorf("%w: grpcx: malformed frame: %w", transport.ErrProtocol, protowire.ParseError(n))
}
