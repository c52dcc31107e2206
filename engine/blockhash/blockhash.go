// Package blockhash computes the prefix hash chain that names full KV-cache
// blocks across Tandem.
//
// A prompt is cut into blocks of blockSize tokens; only full blocks are named.
// The hash of block i covers the hash of block i-1 and the token ids of block i,
// so equal hashes mean equal prefixes (up to a hash collision), and the gateway,
// the coordinator and every worker compute identical values from the model id
// and the token ids alone. The chain starts from Seed(modelID), so two models
// never share a name for a block.
//
// The function is FNV-1a 64 over little-endian bytes (the previous hash as 8
// bytes, then each token id as 4 bytes), finished with the murmur3 fmix64
// avalanche so that nearby prefixes spread over the whole 64-bit range (plain
// FNV-1a leaves the low bits weakly mixed, and maps key on them). The exact byte
// layout is part of the wire contract: changing it invalidates every cache.
//
// Collisions: for n distinct blocks the chance that any two share a hash is
// about n²/2^65, so 10^7 cached blocks (far beyond one cluster's memory) give
// less than 3·10^-6. The KV cache also checks a matched block's token ids and
// parent hash before reusing it, so a collision can only cost a cache miss
// unless two different prefixes collide and also end in identical blocks.
package blockhash

import "encoding/binary"

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// Seed is the hash that precedes a model's first block.
func Seed(modelID string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(modelID); i++ {
		h ^= uint64(modelID[i])
		h *= fnvPrime
	}
	return fmix64(h)
}

// Next returns the hash of the block holding tokens that follows a block (or
// the seed) whose hash is prev.
func Next(prev uint64, tokens []int32) uint64 {
	h := uint64(fnvOffset)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], prev)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	for _, t := range tokens {
		u := uint32(t)
		for k := 0; k < 4; k++ {
			h ^= uint64(byte(u >> (8 * k)))
			h *= fnvPrime
		}
	}
	return fmix64(h)
}

// Chain returns the hashes of the full blocks of tokens: len(tokens)/blockSize
// values, the last partial block left unnamed. A blockSize below 1 yields nil.
func Chain(modelID string, tokens []int32, blockSize int) []uint64 {
	if blockSize < 1 {
		return nil
	}
	n := len(tokens) / blockSize
	out := make([]uint64, n)
	h := Seed(modelID)
	for i := range n {
		h = Next(h, tokens[i*blockSize:(i+1)*blockSize])
		out[i] = h
	}
	return out
}

// fmix64 is murmur3's 64-bit finalizer: every input bit affects every output
// bit with probability close to one half.
func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb93fe53ef863
	h ^= h >> 33
	return h
}
