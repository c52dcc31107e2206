package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/tandemserve/tandem/kernels/quant"
)

// headerSize is magic + version + tensor count + KV count.
const headerSize = 4 + 4 + 8 + 8

// Smallest encodings, used to bound counts before allocating: a KV is a key
// (8-byte length + at least one byte), a 4-byte type and a 1-byte value; a
// tensor descriptor is a name (8 + 1), n_dims (4), type (4) and offset (8).
const (
	minKVSize     = 8 + 1 + 4 + 1
	minTensorSize = 8 + 1 + 4 + 4 + 8
)

// Parse parses a GGUF file held in data. The File keeps data (TensorData
// returns sub-slices of it), so the caller must not modify it afterwards.
func Parse(data []byte) (*File, error) {
	d := &decoder{b: data}
	f := &File{data: data}
	if err := d.header(f); err != nil {
		return nil, err
	}
	return f, nil
}

// decoder reads little-endian fields from b, failing with an error wrapping
// ErrTruncated instead of reading past the end.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) remaining() uint64 { return uint64(len(d.b) - d.off) }

func (d *decoder) need(n uint64, what string) error {
	if n > d.remaining() {
		return fmt.Errorf("%w: %s needs %d bytes at offset %d, %d left", ErrTruncated, what, n, d.off, d.remaining())
	}
	return nil
}

func (d *decoder) bytes(n int, what string) ([]byte, error) {
	if err := d.need(uint64(n), what); err != nil {
		return nil, err
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b, nil
}

func (d *decoder) u32(what string) (uint32, error) {
	b, err := d.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (d *decoder) u64(what string) (uint64, error) {
	b, err := d.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a length-prefixed string, checking the length against the
// remaining bytes before copying.
func (d *decoder) str(what string) (string, error) {
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if err := d.need(n, what); err != nil {
		return "", err
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	return s, nil
}

// strs reads n length-prefixed strings. Tokenizer vocabularies hold ~10^5
// of them, so it validates the lengths in one pass, copies the whole region
// into a single string and slices the elements out of it: two allocations
// instead of n.
func (d *decoder) strs(n int, what string) ([]string, error) {
	start := d.off
	for i := 0; i < n; i++ {
		l, err := d.u64("string length") // no per-element message building
		if err != nil {
			return nil, fmt.Errorf("%w (array %q)", err, what)
		}
		if err := d.need(l, what); err != nil {
			return nil, err
		}
		d.off += int(l)
	}
	region := string(d.b[start:d.off])
	out := make([]string, n)
	p := 0
	for i := range out {
		var l int
		for k := 7; k >= 0; k-- { // little-endian u64, already bounded above
			l = l<<8 | int(region[p+k])
		}
		out[i] = region[p+8 : p+8+l]
		p += 8 + l
	}
	return out, nil
}

// count reads a u64 element count and rejects it when count elements of at
// least minSize bytes each cannot fit in the rest of the file.
func (d *decoder) count(minSize int, what string) (int, error) {
	n, err := d.u64(what)
	if err != nil {
		return 0, err
	}
	hi, lo := bits.Mul64(n, uint64(minSize))
	if hi != 0 || lo > d.remaining() {
		return 0, fmt.Errorf("%w: %s %d cannot fit in the %d bytes left at offset %d", ErrInvalid, what, n, d.remaining(), d.off)
	}
	return int(n), nil
}

func (d *decoder) header(f *File) error {
	magic, err := d.bytes(4, "magic")
	if err != nil {
		return err
	}
	if string(magic) != Magic {
		return fmt.Errorf("%w: bad magic %q, not a GGUF file", ErrInvalid, magic)
	}
	if f.Version, err = d.u32("version"); err != nil {
		return err
	}
	if f.Version != 2 && f.Version != 3 {
		return fmt.Errorf("%w: version %d (want 2 or 3)", ErrUnsupportedVersion, f.Version)
	}
	nTensors, err := d.count(minTensorSize, "tensor count")
	if err != nil {
		return err
	}
	nKV, err := d.count(minKVSize, "metadata count")
	if err != nil {
		return err
	}
	if err := d.metadata(f, nKV); err != nil {
		return err
	}
	if err := d.tensorInfos(f, nTensors); err != nil {
		return err
	}
	return d.layout(f)
}

func (d *decoder) metadata(f *File, n int) error {
	// n was bounded by the whole file; bound the preallocation again by
	// what is left now.
	c := min(n, int(d.remaining()/minKVSize))
	f.KV = make([]KV, 0, c)
	f.kvIndex = make(map[string]int, c)
	for i := 0; i < n; i++ {
		key, err := d.str("metadata key")
		if err != nil {
			return err
		}
		if key == "" {
			return fmt.Errorf("%w: metadata pair %d has an empty key", ErrInvalid, i)
		}
		if _, dup := f.kvIndex[key]; dup {
			return fmt.Errorf("%w: duplicate metadata key %q", ErrInvalid, key)
		}
		t, err := d.u32("metadata value type")
		if err != nil {
			return fmt.Errorf("%w (key %q)", err, key)
		}
		v, err := d.value(ValueType(t), key)
		if err != nil {
			return err
		}
		f.kvIndex[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Value: v})
	}
	f.Alignment = DefaultAlignment
	if v, ok := f.Value(KeyAlignment); ok {
		a, err := v.Uint()
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalid, KeyAlignment, err)
		}
		if a == 0 || a&(a-1) != 0 || a > maxAlignment {
			return fmt.Errorf("%w: %s = %d is not a power of two up to %d", ErrInvalid, KeyAlignment, a, maxAlignment)
		}
		f.Alignment = a
	}
	return nil
}

func (d *decoder) value(t ValueType, key string) (Value, error) {
	switch {
	case t == TypeArray:
		return d.array(key)
	case t == TypeString:
		s, err := d.str(key)
		return Value{typ: t, x: s}, err
	case !t.Valid():
		return Value{}, fmt.Errorf("%w: metadata value type %d for %q", ErrUnknownType, uint32(t), key)
	}
	b, err := d.bytes(t.size(), key)
	if err != nil {
		return Value{}, err
	}
	x, err := scalar(t, b, key)
	return Value{typ: t, x: x}, err
}

// scalar decodes a fixed-size value of type t from b (len t.size()).
func scalar(t ValueType, b []byte, key string) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("%w: bool %q has byte %d", ErrInvalid, key, b[0])
		}
		return b[0] == 1, nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, fmt.Errorf("%w: value type %v for %q", ErrUnknownType, t, key)
}

func (d *decoder) array(key string) (Value, error) {
	et32, err := d.u32("array element type")
	if err != nil {
		return Value{}, fmt.Errorf("%w (key %q)", err, key)
	}
	et := ValueType(et32)
	switch {
	case et == TypeArray:
		return Value{}, fmt.Errorf("%w: nested array in %q", ErrInvalid, key)
	case !et.Valid():
		return Value{}, fmt.Errorf("%w: array element type %d in %q", ErrUnknownType, et32, key)
	}
	n, err := d.count(et.minSize(), "array length")
	if err != nil {
		return Value{}, fmt.Errorf("%w (key %q)", err, key)
	}
	if et == TypeString {
		out, err := d.strs(n, key)
		return arrayValue(et, out), err
	}
	raw, err := d.bytes(n*et.size(), key) // count() checked the product
	if err != nil {
		return Value{}, err
	}
	x, err := decodeArray(et, raw, n, key)
	return arrayValue(et, x), err
}

// decodeArray decodes n packed fixed-size elements of type t from raw.
func decodeArray(t ValueType, raw []byte, n int, key string) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return append([]uint8(nil), raw...), nil
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out, nil
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, fmt.Errorf("%w: bool array %q has byte %d", ErrInvalid, key, raw[i])
			}
			out[i] = raw[i] == 1
		}
		return out, nil
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out, nil
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out, nil
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out, nil
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out, nil
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out, nil
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: array element type %v in %q", ErrUnknownType, t, key)
}

func (d *decoder) tensorInfos(f *File, n int) error {
	if uint64(n) > d.remaining()/minTensorSize {
		return fmt.Errorf("%w: %d tensor descriptors cannot fit in the %d bytes left at offset %d", ErrInvalid, n, d.remaining(), d.off)
	}
	f.Tensors = make([]TensorInfo, 0, n)
	f.tIndex = make(map[string]int, n)
	for i := 0; i < n; i++ {
		t, err := d.tensorInfo(i)
		if err != nil {
			if t.Name != "" {
				return fmt.Errorf("%w (tensor %q)", err, t.Name)
			}
			return err
		}
		if _, dup := f.tIndex[t.Name]; dup {
			return fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, t.Name)
		}
		f.tIndex[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	return nil
}

func (d *decoder) tensorInfo(i int) (TensorInfo, error) {
	var t TensorInfo
	nameLen, err := d.u64("tensor name length")
	if err != nil {
		return t, err
	}
	if nameLen == 0 || nameLen > MaxNameLen {
		return t, fmt.Errorf("%w: tensor %d name is %d bytes (want 1..%d)", ErrInvalid, i, nameLen, MaxNameLen)
	}
	name, err := d.bytes(int(nameLen), "tensor name")
	if err != nil {
		return t, err
	}
	t.Name = string(name)
	nDims, err := d.u32("tensor n_dims")
	if err != nil {
		return t, err
	}
	if nDims > MaxDims {
		return t, fmt.Errorf("%w: tensor %q has %d dims (max %d)", ErrInvalid, t.Name, nDims, MaxDims)
	}
	t.Dims = make([]uint64, nDims)
	elems := uint64(1)
	for j := range t.Dims {
		if t.Dims[j], err = d.u64("tensor dims"); err != nil {
			return t, err
		}
		// ggml keeps ne in int64: larger extents or products are invalid.
		hi, lo := bits.Mul64(elems, t.Dims[j])
		if t.Dims[j] > math.MaxInt64 || hi != 0 || lo > math.MaxInt64 {
			return t, fmt.Errorf("%w: tensor %q dims %v overflow", ErrInvalid, t.Name, t.Dims[:j+1])
		}
		elems = lo
	}
	typ, err := d.u32("tensor type")
	if err != nil {
		return t, err
	}
	t.Type = quant.Type(typ)
	if !t.Type.Valid() {
		return t, fmt.Errorf("%w: tensor %q has ggml type %d", ErrUnknownType, t.Name, typ)
	}
	if t.Offset, err = d.u64("tensor offset"); err != nil {
		return t, err
	}
	bs := uint64(t.Type.BlockSize())
	if t.RowLen()%bs != 0 {
		return t, fmt.Errorf("%w: tensor %q row of %d values is not a whole number of %v blocks of %d", ErrInvalid, t.Name, t.RowLen(), t.Type, bs)
	}
	// elems/bs blocks fit in int64, and block sizes are small: the byte
	// size cannot overflow uint64.
	t.Size = elems / bs * uint64(t.Type.BlockBytes())
	return t, nil
}

// layout places the data section and checks every tensor lies inside it,
// aligned and without overlapping another.
func (d *decoder) layout(f *File) error {
	pad := (f.Alignment - uint64(d.off)%f.Alignment) % f.Alignment
	f.DataOffset = uint64(d.off) + pad
	if len(f.Tensors) == 0 {
		// A file without tensors may end right after its metadata.
		f.DataOffset = min(f.DataOffset, uint64(len(d.b)))
		return nil
	}
	if f.DataOffset > uint64(len(d.b)) {
		return fmt.Errorf("%w: data section at %d is past the end (%d bytes)", ErrTruncated, f.DataOffset, len(d.b))
	}
	dataLen := uint64(len(d.b)) - f.DataOffset
	order := make([]int, len(f.Tensors))
	for i, t := range f.Tensors {
		order[i] = i
		if t.Offset%f.Alignment != 0 {
			return fmt.Errorf("%w: tensor %q offset %d is not a multiple of the alignment %d", ErrInvalid, t.Name, t.Offset, f.Alignment)
		}
		if end, ok := addU64(t.Offset, t.Size); !ok || end > dataLen {
			return fmt.Errorf("%w: tensor %q [%d, +%d) ends past the data section (%d bytes)", ErrTruncated, t.Name, t.Offset, t.Size, dataLen)
		}
	}
	sortByOffset(order, f.Tensors)
	for k := 1; k < len(order); k++ {
		a, b := f.Tensors[order[k-1]], f.Tensors[order[k]]
		if a.Size > 0 && b.Size > 0 && a.Offset+a.Size > b.Offset {
			return fmt.Errorf("%w: tensors %q [%d, +%d) and %q [%d, +%d) overlap", ErrInvalid, a.Name, a.Offset, a.Size, b.Name, b.Offset, b.Size)
		}
	}
	return nil
}
