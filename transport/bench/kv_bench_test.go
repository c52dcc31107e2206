package bench

import (
	"context"
	"testing"

	"github.com/tandemserve/tandem/kernels"
)

// llama8BSpec is Llama-3-8B's KV shape (32 layers, 8 KV heads of 128, f16)
// with 16-token blocks: 64 KiB blocks, 4 MiB per layer for 1,024 tokens.
func llama8BSpec(blocks int) kernels.KVSpec {
	return kernels.KVSpec{Layers: 32, Blocks: blocks, BlockSize: 16, KVHeads: 8, HeadDim: 128, DType: kernels.KVF16}
}

// BenchmarkKVHandover moves the KV of a 1,024-token prompt over shared
// memory, reservation to claim, for the default model's shape and for a
// Llama-3-8B-shaped one, next to a memcpy of the same bytes:
// go test -run '^$' -bench KVHandover ./transport/bench
func BenchmarkKVHandover(b *testing.B) {
	const tokens = 1024
	for _, tc := range []struct {
		name string
		spec kernels.KVSpec
	}{
		{"smollm2", SmolLM2Spec(2 * tokens / 16)},
		{"llama8b", llama8BSpec(2 * tokens / 16)},
	} {
		n := tokens / tc.spec.BlockSize
		bytes := int64(n) * int64(tc.spec.Layers) * int64(tc.spec.BlockBytes())
		b.Run(tc.name+"/shm", func(b *testing.B) {
			o := DefaultOptions()
			e, err := newEndpoint(context.Background(), tc.spec, b.TempDir(), o, o.Logger)
			if err != nil {
				b.Fatal(err)
			}
			defer e.close()
			b.SetBytes(bytes)
			for b.Loop() {
				if _, _, err := e.transfer(context.Background(), e.shm, n, o.SHMChunkBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/memcpy", func(b *testing.B) {
			src, dst := make([]byte, bytes), make([]byte, bytes)
			for i := range src {
				src[i] = byte(i * 7)
			}
			copy(dst, src)
			b.SetBytes(bytes)
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}
