// Package gguf reads and writes GGUF files, the container llama.cpp uses for
// model weights and metadata.
//
// A GGUF file is a header (magic, version, counts), an ordered list of typed
// key/value metadata pairs, a table of tensor descriptors (name, dimensions in
// ggml ne order, quant.Type, offset) and, at the next multiple of the file's
// alignment, the tensor data section. Open memory-maps the file read-only and
// parses everything but the tensor data, which stays in the page cache and
// is handed out as zero-copy slices of the mapping (TensorData), so opening a
// model costs milliseconds regardless of its size and resident memory grows
// only with the pages actually touched.
//
// The parser treats the file as hostile: every count and length is checked
// against the bytes that remain before anything is allocated, every tensor
// must lie inside the data section without overlapping another, and
// malformed input yields an error wrapping ErrInvalid (or ErrUnsupportedVersion,
// ErrUnknownType), never a panic. Versions 2 and 3 are read (they share a
// layout); Write produces version 3.
//
// A File is immutable after Open/Parse and safe for concurrent readers.
// Slices returned by TensorData alias the mapping and are valid until Close.
package gguf

import (
	"errors"
	"fmt"
	"os"

	"github.com/tandemserve/tandem/kernels/quant"
)

// Sentinel errors; the package's errors wrap them.
var (
	// ErrInvalid reports a malformed file: bad magic, truncation, counts
	// or lengths beyond the file, bad alignment, tensors outside the data
	// section or overlapping, duplicate keys or names.
	ErrInvalid = errors.New("gguf: invalid file")
	// ErrTruncated reports a file that ends in the middle of a structure
	// or before a tensor's data; it is a kind of ErrInvalid (errors.Is
	// matches both).
	ErrTruncated error = &subError{msg: "gguf: truncated file", parent: ErrInvalid}
	// ErrUnsupportedVersion reports a GGUF version other than 2 or 3.
	ErrUnsupportedVersion = errors.New("gguf: unsupported version")
	// ErrUnknownType reports a metadata value type or tensor type that
	// this package does not know.
	ErrUnknownType = errors.New("gguf: unknown type")
	// ErrNotFound reports a missing metadata key or tensor.
	ErrNotFound = errors.New("gguf: not found")
	// ErrValueType reports a metadata value read as an incompatible type.
	ErrValueType = errors.New("gguf: wrong value type")
)

// subError is a sentinel that is also an instance of a broader sentinel.
type subError struct {
	msg    string
	parent error
}

func (e *subError) Error() string { return e.msg }
func (e *subError) Unwrap() error { return e.parent }

const (
	// Magic is the first four bytes of every GGUF file.
	Magic = "GGUF"
	// DefaultAlignment applies when general.alignment is absent.
	DefaultAlignment = 32
	// KeyAlignment is the metadata key that sets the data alignment.
	KeyAlignment = "general.alignment"
	// MaxNameLen is the longest tensor name Parse accepts, in bytes.
	MaxNameLen = 64
	// MaxWriteNameLen is the longest tensor name Write accepts: ggml keeps
	// names in a NUL-terminated char[64] and rejects 64-byte names, so
	// files meant for llama.cpp must stay one byte shorter.
	MaxWriteNameLen = MaxNameLen - 1
	// MaxDims is the most dimensions a tensor may have (GGML_MAX_DIMS).
	MaxDims = 4
	// maxAlignment bounds general.alignment: ggml uses 32, larger values
	// only waste space, and a bound keeps padding arithmetic far from
	// overflow.
	maxAlignment = 1 << 30
)

// KV is one metadata pair.
type KV struct {
	Key   string
	Value Value
}

// File is a parsed GGUF file.
type File struct {
	// Version is the GGUF version, 2 or 3.
	Version uint32
	// KV is the metadata in file order.
	KV []KV
	// Tensors are the tensor descriptors in file order.
	Tensors []TensorInfo
	// Alignment is the data alignment: general.alignment or 32.
	Alignment uint64
	// DataOffset is the absolute file offset of the tensor data section.
	DataOffset uint64

	data    []byte // the whole file: a read-only mapping or caller bytes
	kvIndex map[string]int
	tIndex  map[string]int
	unmap   func() error // nil for Parse
}

// Open memory-maps the GGUF file at path read-only and parses it. The caller
// must Close the File to release the mapping.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	defer fh.Close() // the mapping outlives the descriptor
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if st.Size() < headerSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, smaller than a header", ErrTruncated, path, st.Size())
	}
	if int64(int(st.Size())) != st.Size() {
		return nil, fmt.Errorf("%w: %s is too large to map (%d bytes)", ErrInvalid, path, st.Size())
	}
	data, unmap, err := mapFile(fh, int(st.Size()))
	if err != nil {
		return nil, fmt.Errorf("gguf: map %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		_ = unmap() // the parse error is the one worth reporting
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	f.unmap = unmap
	return f, nil
}

// Close releases the mapping of a File made by Open; slices obtained from
// TensorData must not be used afterwards. It is a no-op for Parse'd files
// and safe to call more than once.
func (f *File) Close() error {
	f.data = nil
	if f.unmap == nil {
		return nil
	}
	unmap := f.unmap
	f.unmap = nil
	if err := unmap(); err != nil {
		return fmt.Errorf("gguf: unmap: %w", err)
	}
	return nil
}

// Size is the file's size in bytes (0 after Close).
func (f *File) Size() int { return len(f.data) }

// Tensor returns the descriptor of the tensor called name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tIndex[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// TensorData returns t's bytes as a slice of the file (no copy); the caller
// must not modify it (an Open'ed mapping is read-only and writing faults).
// It returns nil when t does not lie inside this file's data section, for
// example a TensorInfo from another file, or after Close.
func (f *File) TensorData(t TensorInfo) []byte {
	end, ok := addU64(t.Offset, t.Size)
	if !ok || f.DataOffset > uint64(len(f.data)) || end > uint64(len(f.data))-f.DataOffset {
		return nil
	}
	start := f.DataOffset + t.Offset
	return f.data[start : start+t.Size : start+t.Size]
}

// TensorByName returns the descriptor and data of the tensor called name,
// or an error wrapping ErrNotFound.
func (f *File) TensorByName(name string) (TensorInfo, []byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("%w: tensor %q", ErrNotFound, name)
	}
	return t, f.TensorData(t), nil
}

// TensorInfo describes one tensor.
type TensorInfo struct {
	Name string
	// Dims are the extents in ggml ne order: Dims[0] varies fastest and is
	// the length of one contiguous row.
	Dims []uint64
	Type quant.Type
	// Offset is relative to the data section (File.DataOffset).
	Offset uint64
	// Size is the encoded size in bytes.
	Size uint64
}

// Elements is the number of values (the product of Dims; 1 for a scalar).
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d // the parser rejected products that overflow
	}
	return n
}

// RowLen is the number of values in one contiguous row (Dims[0]).
func (t TensorInfo) RowLen() uint64 {
	if len(t.Dims) == 0 {
		return 1
	}
	return t.Dims[0]
}

// Rows is the number of rows: the product of Dims[1:].
func (t TensorInfo) Rows() uint64 {
	n := uint64(1)
	for i := 1; i < len(t.Dims); i++ {
		n *= t.Dims[i]
	}
	return n
}

func addU64(a, b uint64) (uint64, bool) {
	s := a + b
	return s, s >= a
}
