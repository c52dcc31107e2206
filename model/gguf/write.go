package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/tandemserve/tandem/kernels/quant"
)

// WriteTensor is one tensor for Write: Data holds exactly the encoded size
// of Dims (ggml ne order) in Type's format.
type WriteTensor struct {
	Name string
	Dims []uint64
	Type quant.Type
	Data []byte
}

// Write encodes a version 3 GGUF file: the metadata in the given order, then
// the tensor descriptors and data in the given order, each tensor starting at
// a multiple of the alignment (general.alignment when kvs sets it, else 32)
// and padded with zeros, packed in the given order as ggml requires. It
// validates everything Parse would check (tensor names are held to ggml's
// stricter MaxWriteNameLen), so a file it writes always parses, and it
// writes nothing when validation fails.
func Write(w io.Writer, kvs []KV, tensors []WriteTensor) error {
	align, err := checkWrite(kvs, tensors)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	e := &encoder{w: bw}
	e.raw([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.typ))
		e.value(kv.Value)
	}
	var off uint64
	offsets := make([]uint64, len(tensors))
	for i, t := range tensors {
		offsets[i] = off
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off += padLen(uint64(len(t.Data)), align)
	}
	if len(tensors) > 0 {
		e.zeros(padLen(e.n, align) - e.n)
	}
	dataStart := e.n
	for i, t := range tensors {
		if e.err == nil && e.n-dataStart != offsets[i] {
			// Only a short write that reported no error can get here.
			return fmt.Errorf("gguf: write: tensor %q at data offset %d, want %d", t.Name, e.n-dataStart, offsets[i])
		}
		e.raw(t.Data)
		e.zeros(padLen(uint64(len(t.Data)), align) - uint64(len(t.Data)))
	}
	if e.err != nil {
		return fmt.Errorf("gguf: write: %w", e.err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gguf: write: %w", err)
	}
	return nil
}

func padLen(n, align uint64) uint64 { return (n + align - 1) / align * align }

// checkWrite validates Write's input and returns the alignment.
func checkWrite(kvs []KV, tensors []WriteTensor) (uint64, error) {
	align := uint64(DefaultAlignment)
	seen := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if kv.Key == "" || seen[kv.Key] {
			return 0, fmt.Errorf("%w: empty or duplicate metadata key %q", ErrInvalid, kv.Key)
		}
		seen[kv.Key] = true
		if err := kv.Value.check(); err != nil {
			return 0, fmt.Errorf("%w (key %q)", err, kv.Key)
		}
		if kv.Key == KeyAlignment {
			a, err := kv.Value.Uint()
			if err != nil || a == 0 || a&(a-1) != 0 || a > maxAlignment {
				return 0, fmt.Errorf("%w: %s = %v is not a power of two up to %d", ErrInvalid, KeyAlignment, kv.Value, maxAlignment)
			}
			align = a
		}
	}
	names := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		if len(t.Name) == 0 || len(t.Name) > MaxWriteNameLen || names[t.Name] {
			return 0, fmt.Errorf("%w: tensor name %q is empty, longer than %d bytes or repeated", ErrInvalid, t.Name, MaxWriteNameLen)
		}
		names[t.Name] = true
		if len(t.Dims) > MaxDims {
			return 0, fmt.Errorf("%w: tensor %q has %d dims (max %d)", ErrInvalid, t.Name, len(t.Dims), MaxDims)
		}
		if !t.Type.Valid() {
			return 0, fmt.Errorf("%w: tensor %q has type %v", ErrUnknownType, t.Name, t.Type)
		}
		elems := uint64(1)
		for _, d := range t.Dims {
			hi, lo := bits.Mul64(elems, d)
			if hi != 0 || lo > math.MaxInt64 {
				return 0, fmt.Errorf("%w: tensor %q dims %v overflow", ErrInvalid, t.Name, t.Dims)
			}
			elems = lo
		}
		info := TensorInfo{Dims: t.Dims, Type: t.Type}
		bs := uint64(t.Type.BlockSize())
		if info.RowLen()%bs != 0 {
			return 0, fmt.Errorf("%w: tensor %q row of %d is not a whole number of %v blocks", ErrInvalid, t.Name, info.RowLen(), t.Type)
		}
		if want := elems / bs * uint64(t.Type.BlockBytes()); uint64(len(t.Data)) != want {
			return 0, fmt.Errorf("%w: tensor %q has %d bytes of data, its shape needs %d", ErrInvalid, t.Name, len(t.Data), want)
		}
	}
	return align, nil
}

// check verifies that a Value's Go payload matches its type tag, which
// catches zero Values and hand-built ones.
func (v Value) check() error {
	if v.typ == TypeArray {
		et, ok := sliceElemType(v.x)
		if !ok || et != v.elem {
			return fmt.Errorf("%w: array value holds %T for element type %v", ErrValueType, v.x, v.elem)
		}
		return nil
	}
	nv, err := NewValue(v.x)
	if err != nil || nv.typ != v.typ || v.x == nil {
		return fmt.Errorf("%w: value of type %v holds %T", ErrValueType, v.typ, v.x)
	}
	return nil
}

// encoder writes little-endian fields, remembering the first error and the
// byte count (for alignment padding).
type encoder struct {
	w   io.Writer
	n   uint64
	err error
	buf [8]byte
}

func (e *encoder) raw(b []byte) {
	if e.err != nil {
		return
	}
	var n int
	n, e.err = e.w.Write(b)
	e.n += uint64(n)
}

func (e *encoder) zeros(n uint64) {
	var z [64]byte
	for n > 0 {
		k := min(n, uint64(len(z)))
		e.raw(z[:k])
		n -= k
	}
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.raw(e.buf[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.raw(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.raw(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.raw(e.buf[:8])
}
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.raw([]byte(s)) }

func (e *encoder) boolean(b bool) {
	if b {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

// value writes v's payload (not its type tag); v passed check.
func (e *encoder) value(v Value) {
	switch x := v.x.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		e.boolean(x)
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	default:
		e.u32(uint32(v.elem))
		e.u64(uint64(v.Len()))
		e.array(v.x)
	}
}

func (e *encoder) array(x any) {
	switch a := x.(type) {
	case []uint8:
		e.raw(a)
	case []int8:
		for _, v := range a {
			e.u8(uint8(v))
		}
	case []uint16:
		for _, v := range a {
			e.u16(v)
		}
	case []int16:
		for _, v := range a {
			e.u16(uint16(v))
		}
	case []uint32:
		for _, v := range a {
			e.u32(v)
		}
	case []int32:
		for _, v := range a {
			e.u32(uint32(v))
		}
	case []float32:
		for _, v := range a {
			e.u32(math.Float32bits(v))
		}
	case []bool:
		for _, v := range a {
			e.boolean(v)
		}
	case []string:
		for _, v := range a {
			e.str(v)
		}
	case []uint64:
		for _, v := range a {
			e.u64(v)
		}
	case []int64:
		for _, v := range a {
			e.u64(uint64(v))
		}
	case []float64:
		for _, v := range a {
			e.u64(math.Float64bits(v))
		}
	}
}
