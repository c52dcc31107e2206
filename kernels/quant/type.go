// Package quant defines the tensor storage formats that GGUF files use (the
// ggml types) and pure-Go reference code for them: conversion of half floats,
// dequantization, quantization and quantized dot products. The SIMD and CUDA
// kernels are tested against this package.
//
// The model: a weight row is stored in blocks (32 values for the legacy
// formats Q4_0 ... Q8_0, 256 for the K-quants Q4_K, Q5_K, Q6_K), each block
// a few small integer codes plus f16 scales. A matrix-vector product does not
// dequantize the weights: as in llama.cpp, the activation row is quantized
// once to an 8-bit format chosen by the weight type (ActivationType: Q8_0,
// Q8_1 or Q8_K), every block pair is multiplied exactly in integers, and only
// the per-block sums are scaled in float32. VecDot is that computation,
// written plainly; it is the contract the SIMD and CUDA kernels reproduce.
//
// Every function is pure and safe for concurrent use. Buffer sizes are
// checked: a value count must be a whole number of blocks and a byte buffer
// exactly Type.RowBytes long, otherwise the error wraps ErrLength. Any byte
// pattern decodes without panicking (tensor data comes from untrusted files).
package quant

import "fmt"

// Type is a ggml tensor type; the numeric values are the on-disk enum.
type Type uint32

const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q8_1 Type = 9
	Q2_K Type = 10
	Q3_K Type = 11
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	BF16 Type = 30
)

type typeInfo struct {
	name       string
	blockSize  int // values per block
	blockBytes int // bytes per block
}

// Only the types Tandem can compute with are listed; any other enum value is
// rejected by Valid, so a hostile file cannot name an unknown layout.
var typeInfos = map[Type]typeInfo{
	F32:  {"F32", 1, 4},
	F16:  {"F16", 1, 2},
	BF16: {"BF16", 1, 2},
	Q4_0: {"Q4_0", 32, 18},
	Q4_1: {"Q4_1", 32, 20},
	Q5_0: {"Q5_0", 32, 22},
	Q5_1: {"Q5_1", 32, 24},
	Q8_0: {"Q8_0", 32, 34},
	Q8_1: {"Q8_1", 32, 36},
	Q4_K: {"Q4_K", 256, 144},
	Q5_K: {"Q5_K", 256, 176},
	Q6_K: {"Q6_K", 256, 210},
	Q8_K: {"Q8_K", 256, 292},
}

// Valid reports whether t is a type Tandem knows the layout of.
func (t Type) Valid() bool { _, ok := typeInfos[t]; return ok }

func (t Type) String() string {
	if ti, ok := typeInfos[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize is the number of values in one block (1 for plain floats).
func (t Type) BlockSize() int { return typeInfos[t].blockSize }

// BlockBytes is the encoded size of one block.
func (t Type) BlockBytes() int { return typeInfos[t].blockBytes }

// RowBytes is the encoded size of n values, or -1 when n is not a whole
// number of blocks or t is unknown.
func (t Type) RowBytes(n int) int {
	ti, ok := typeInfos[t]
	if !ok || n < 0 || n%ti.blockSize != 0 {
		return -1
	}
	return n / ti.blockSize * ti.blockBytes
}

// ParseType parses a type name such as "Q4_1" or "f16".
func ParseType(s string) (Type, error) {
	for t, ti := range typeInfos {
		if equalFold(ti.name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("quant: unknown type %q", s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
