// Package kernels defines the compute boundary between Tandem's model code and
// the devices that run it.
//
// A Backend owns device memory: weights, activation tensors and KV-cache storage
// are opaque handles created by the backend and only ever passed back to it. The
// model code (model/llama) expresses a transformer layer as a short sequence of
// calls on this interface and never touches device memory itself, so the CPU
// backend (kernels/cpu), the pure-Go reference (kernels/ref) and the CUDA backend
// (kernels/cuda) are interchangeable.
//
// Every operation works on a batch of T token rows that may belong to different
// sequences. Kernels must be batch-invariant: the value computed for one row may
// not depend on which other rows share the batch (reductions run in a fixed order
// per row), so a sequence produces bit-identical results alone or batched.
//
// Concurrency: a Backend and everything it created are used by one goroutine at a
// time (the engine's step loop); implementations may parallelise internally.
// KVCache block I/O (ReadBlock/WriteBlock) may be called from other goroutines
// for blocks that no running step reads or writes; the engine's block ownership
// rules guarantee that.
package kernels

import "github.com/tandemserve/tandem/kernels/quant"

// Tensor is a row-major float32 matrix of activations in device memory.
type Tensor interface {
	Rows() int
	Cols() int
}

// Weight is a row-major matrix stored in one of the quant.Type formats. Row i
// holds the weights of output feature i (the ggml layout), so MatMul computes
// x·Wᵀ.
type Weight interface {
	Type() quant.Type
	Rows() int
	Cols() int
}

// KVCache is paged key/value storage for every layer of a model.
//
// Layout: layer l owns one contiguous region of Blocks*BlockBytes bytes; block b
// of layer l is the byte range [b*BlockBytes, (b+1)*BlockBytes) of that region,
// holding the keys of its BlockSize token slots followed by their values (see
// KVSpec.BlockBytes). The transport moves blocks as these raw byte ranges.
type KVCache interface {
	Spec() KVSpec
	// Region returns layer's storage when it is host-addressable (CPU
	// backends); ok is false for device memory, where ReadBlock/WriteBlock copy.
	Region(layer int) (region []byte, ok bool)
	// ReadBlock copies block's bytes for layer into dst (len BlockBytes).
	ReadBlock(layer, block int, dst []byte) error
	// WriteBlock overwrites block's bytes for layer from src (len BlockBytes).
	WriteBlock(layer, block int, src []byte) error
	Close() error
}

// AttnSeq describes one sequence of an attention batch. Its QueryLen query rows
// start at row QueryStart of the query tensor and are its newest tokens: query i
// sits at position KVLen-QueryLen+i and attends causally to keys [0, that
// position]. Blocks is the sequence's block table; slot s of the sequence lives
// in block Blocks[s/BlockSize] at offset s%BlockSize. The keys and values of the
// query tokens must already be stored (StoreKV) before Attention runs.
type AttnSeq struct {
	QueryStart int
	QueryLen   int
	KVLen      int
	Blocks     []int32
}

// AttnParams are the shape of one attention call.
type AttnParams struct {
	Heads   int
	KVHeads int
	HeadDim int
	Scale   float32
	Seqs    []AttnSeq
}

// RoPEParams describe rotary position embeddings. Interleaved selects the GGUF
// ("normal") pairing of adjacent elements (2i, 2i+1); otherwise element i pairs
// with i+Dims/2 (the "neox" layout of Hugging Face weights).
type RoPEParams struct {
	Heads       int
	HeadDim     int
	Dims        int // rotated dimensions per head, <= HeadDim
	Base        float32
	FreqScale   float32 // 1 for no scaling
	Interleaved bool
}

// Backend is a compute device. Methods that take tensors panic only on
// programmer errors (mismatched shapes); device failures are returned.
type Backend interface {
	Name() string

	// NewWeight makes a weight matrix from data in t's format. A CPU backend
	// may keep a reference to data (a memory-mapped file) instead of copying.
	NewWeight(t quant.Type, rows, cols int, data []byte) (Weight, error)
	// NewTensor allocates a zeroed rows x cols activation tensor.
	NewTensor(rows, cols int) Tensor
	// Write copies src (len rows*cols) into t; Read copies t into dst.
	Write(t Tensor, src []float32)
	Read(dst []float32, t Tensor)
	// NewKVCache allocates paged KV storage.
	NewKVCache(spec KVSpec) (KVCache, error)

	// Embed sets dst row i to row ids[i] of table, dequantized.
	Embed(dst Tensor, table Weight, ids []int32)
	// RMSNorm sets dst = x / sqrt(mean(x²)+eps) * w, per row; w is an F32 vector.
	RMSNorm(dst, x Tensor, w Weight, eps float32)
	// MatMul sets dst[T, w.Rows] = x[T, w.Cols] · wᵀ.
	MatMul(dst, x Tensor, w Weight)
	// RoPE rotates x (T rows of Heads*HeadDim) in place; pos[i] is row i's position.
	RoPE(x Tensor, pos []int32, p RoPEParams)
	// Add sets dst += x.
	Add(dst, x Tensor)
	// SwiGLU sets dst = silu(gate) * up.
	SwiGLU(dst, gate, up Tensor)
	// StoreKV writes row i of k and v (KVHeads*HeadDim each) for layer into
	// slot slots[i], where slot = block*BlockSize + offset.
	StoreKV(c KVCache, layer int, k, v Tensor, slots []int32)
	// Attention computes causal grouped-query attention of q against the
	// cached keys and values of layer, writing Heads*HeadDim per query row.
	Attention(dst, q Tensor, c KVCache, layer int, p AttnParams)
	// Gather sets dst row i to src row rows[i].
	Gather(dst, src Tensor, rows []int32)

	Close() error
}
