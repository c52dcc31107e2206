package cuda

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/tandemserve/tandem/kernels"
)

// KVCache is paged KV storage in device memory, in the kernels.KVCache
// layout and row format (f16 or int8), so blocks are byte-compatible with the
// CPU backends' caches.
// Block I/O runs on its own CUDA stream under mu, so the transport may read
// and write blocks while the engine's step runs on the backend's stream.
// Block I/O must have stopped before the Backend is closed.
type KVCache struct {
	b      *Backend
	spec   kernels.KVSpec
	layers []uintptr // one region per layer
	io     uintptr   // context (stream) for block copies
	mu     sync.Mutex
}

var _ kernels.KVCache = (*KVCache)(nil)

// NewKVCache implements kernels.Backend, for f16 and int8 storage.
func (b *Backend) NewKVCache(spec kernels.KVSpec) (kernels.KVCache, error) {
	if b.lib == nil {
		return nil, ErrClosed
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("cuda: %w", err)
	}
	io, err := b.lib.create(b.info.Index)
	if err != nil {
		return nil, err
	}
	b.mem.addCtx(io)
	c := &KVCache{b: b, spec: spec, io: io}
	region := spec.Blocks * spec.BlockBytes()
	for l := 0; l < spec.Layers; l++ {
		ptr, err := b.mem.alloc(region)
		if err != nil {
			_ = c.Close()
			return nil, err
		}
		c.layers = append(c.layers, ptr)
	}
	return c, nil
}

func (b *Backend) cache(c kernels.KVCache, op string) *KVCache {
	kc, ok := c.(*KVCache)
	if !ok || kc.b != b {
		panic(fmt.Sprintf("cuda: %s: KV cache %T is not from this backend", op, c))
	}
	return kc
}

func (b *Backend) liveCache(c *KVCache, layer int) bool {
	c.mu.Lock()
	n := len(c.layers)
	c.mu.Unlock()
	if layer < 0 || layer >= n {
		return !b.fail(fmt.Errorf("%w: layer %d of a cache with %d live layers", ErrInvalidArgument, layer, n))
	}
	return true
}

// Spec implements kernels.KVCache.
func (c *KVCache) Spec() kernels.KVSpec { return c.spec }

// Region implements kernels.KVCache: device memory is not host-addressable.
func (c *KVCache) Region(int) ([]byte, bool) { return nil, false }

func (c *KVCache) blockAddr(layer, block, n int) (uintptr, error) {
	if layer < 0 || layer >= len(c.layers) || block < 0 || block >= c.spec.Blocks {
		return 0, fmt.Errorf("%w: block %d of layer %d outside %d layers x %d blocks", ErrInvalidArgument, block, layer, len(c.layers), c.spec.Blocks)
	}
	if n != c.spec.BlockBytes() {
		return 0, fmt.Errorf("%w: buffer of %d bytes for a block of %d", ErrInvalidArgument, n, c.spec.BlockBytes())
	}
	return c.layers[layer] + uintptr(block*c.spec.BlockBytes()), nil
}

// ReadBlock implements kernels.KVCache. It first waits for the kernels
// already launched on the backend's stream, so a block stored by a step that
// was launched but has not finished is read complete.
func (c *KVCache) ReadBlock(layer, block int, dst []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.layers == nil || c.b.lib == nil {
		return ErrClosed
	}
	addr, err := c.blockAddr(layer, block, len(dst))
	if err != nil {
		return err
	}
	if err := c.b.lib.sync(c.b.ctx); err != nil {
		return err
	}
	return c.b.lib.download(c.io, unsafe.Pointer(&dst[0]), addr, len(dst))
}

// WriteBlock implements kernels.KVCache. The copy is complete when it
// returns, so kernels launched afterwards see the block.
func (c *KVCache) WriteBlock(layer, block int, src []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.layers == nil || c.b.lib == nil {
		return ErrClosed
	}
	addr, err := c.blockAddr(layer, block, len(src))
	if err != nil {
		return err
	}
	return c.b.lib.upload(c.io, addr, unsafe.Pointer(&src[0]), len(src))
}

// Close frees the cache's device memory.
func (c *KVCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.layers == nil && c.io == 0 {
		return nil
	}
	var first error
	for _, p := range c.layers {
		if err := c.b.mem.release(p); err != nil && first == nil {
			first = err
		}
	}
	c.layers = nil
	if c.io != 0 {
		if err := c.b.mem.dropCtx(c.io); err != nil && first == nil {
			first = err
		}
	}
	c.io = 0
	return first
}
