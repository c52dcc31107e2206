package kernels

import (
	"errors"
	"fmt"
)

// KVDType is the element format of KV-cache storage.
type KVDType uint8

const (
	// KVF16 stores keys and values as IEEE half floats.
	KVF16 KVDType = iota
	// KVInt8 stores each head's row of HeadDim values as int8 with one
	// float32 scale (symmetric, scale = max|x|/127): half the memory of F16.
	KVInt8
)

func (d KVDType) String() string {
	switch d {
	case KVF16:
		return "f16"
	case KVInt8:
		return "int8"
	}
	return fmt.Sprintf("KVDType(%d)", uint8(d))
}

// ParseKVDType parses "f16" or "int8".
func ParseKVDType(s string) (KVDType, error) {
	switch s {
	case "f16", "F16", "":
		return KVF16, nil
	case "int8", "INT8", "q8":
		return KVInt8, nil
	}
	return 0, fmt.Errorf("kernels: unknown KV cache dtype %q (want f16 or int8)", s)
}

// KVSpec is the shape of a paged KV cache. Two caches can exchange blocks
// byte-for-byte exactly when their specs are equal.
type KVSpec struct {
	Layers    int
	Blocks    int // blocks per layer
	BlockSize int // token slots per block
	KVHeads   int
	HeadDim   int
	DType     KVDType
}

// ErrInvalidKVSpec reports a KVSpec that cannot describe a cache.
var ErrInvalidKVSpec = errors.New("kernels: invalid KV cache spec")

// Validate checks that every dimension is positive and the cache size fits in
// an int.
func (s KVSpec) Validate() error {
	if s.Layers <= 0 || s.Blocks <= 0 || s.BlockSize <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return fmt.Errorf("%w: %+v", ErrInvalidKVSpec, s)
	}
	if s.DType != KVF16 && s.DType != KVInt8 {
		return fmt.Errorf("%w: dtype %v", ErrInvalidKVSpec, s.DType)
	}
	const maxRegion = 1 << 40
	if int64(s.Blocks)*int64(s.BlockBytes()) > maxRegion {
		return fmt.Errorf("%w: %d blocks of %d bytes per layer is too large", ErrInvalidKVSpec, s.Blocks, s.BlockBytes())
	}
	return nil
}

// RowBytes is the size of one token's keys (or values) for all KV heads.
func (s KVSpec) RowBytes() int {
	switch s.DType {
	case KVInt8:
		return s.KVHeads * (s.HeadDim + 4)
	default:
		return s.KVHeads * s.HeadDim * 2
	}
}

// BlockBytes is the size of one block of one layer: BlockSize key rows
// followed by BlockSize value rows. For KVInt8 a row is KVHeads int8 vectors
// of HeadDim followed by KVHeads float32 scales.
func (s KVSpec) BlockBytes() int { return 2 * s.BlockSize * s.RowBytes() }

// KeyRowOffset is the byte offset, inside a block, of the key row of the
// block's slot off (0 <= off < BlockSize).
func (s KVSpec) KeyRowOffset(off int) int { return off * s.RowBytes() }

// ValueRowOffset is the byte offset, inside a block, of the value row of slot off.
func (s KVSpec) ValueRowOffset(off int) int { return (s.BlockSize + off) * s.RowBytes() }

// BytesPerToken is the KV footprint of one token across all layers.
func (s KVSpec) BytesPerToken() int { return s.Layers * 2 * s.RowBytes() }

// TotalBytes is the size of the whole cache.
func (s KVSpec) TotalBytes() int64 {
	return int64(s.Layers) * int64(s.Blocks) * int64(s.BlockBytes())
}
