package cpu

import (
	"fmt"
	"math"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/kernels"
)

// kvCache is paged KV storage in one sealed memfd, a region per layer:
// pages are committed by the OS on first write, so a cache sized for the
// worst case costs memory only for the blocks in use, and a KV transport
// sender on the same host can map the file and write received blocks in
// place (see transport/shm).
type kvCache struct {
	spec    kernels.KVSpec
	bb      int // BlockBytes
	mu      sync.RWMutex
	fd      int
	mem     []byte   // the whole file; nil after Close
	regions [][]byte // per layer, within mem; nil after Close
	offsets []int64
}

var _ kernels.KVCache = (*kvCache)(nil)

// NewKVCache allocates spec.Layers regions of Blocks*BlockBytes bytes.
func (b *Backend) NewKVCache(spec kernels.KVSpec) (kernels.KVCache, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	if spec.BlockSize > math.MaxInt32/spec.Blocks {
		return nil, fmt.Errorf("cpu: %w: %d slots do not fit int32 slot ids", kernels.ErrInvalidKVSpec, spec.Blocks*spec.BlockSize)
	}
	c := &kvCache{spec: spec, bb: spec.BlockBytes(), fd: -1}
	size := spec.Blocks * c.bb
	total := spec.Layers * size
	fd, err := unix.MemfdCreate("tandem-kv", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%w: memfd_create: %w", ErrResources, err)
	}
	c.fd = fd
	// Sealed at its size: a process sharing the file cannot shrink it
	// under our mapping (which would fault).
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: sizing KV file to %d bytes: %w", ErrResources, total, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: sealing KV file: %w", ErrResources, err)
	}
	if c.mem, err = unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: mapping %d bytes of KV cache: %w", ErrResources, total, err)
	}
	c.regions = make([][]byte, spec.Layers)
	c.offsets = make([]int64, spec.Layers)
	for l := range c.regions {
		c.regions[l] = c.mem[l*size : (l+1)*size : (l+1)*size]
		c.offsets[l] = int64(l * size)
	}
	return c, nil
}

// MemFD returns the file holding the cache and where each layer's region
// starts in it, for a transport that lets same-host peers write blocks in
// place. The descriptor stays owned by the cache.
func (c *kvCache) MemFD() (fd int, offsets []int64, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.mem == nil {
		return -1, nil, false
	}
	return c.fd, c.offsets, true
}

func (c *kvCache) Spec() kernels.KVSpec { return c.spec }

// Region returns layer's storage; it is invalid after Close.
func (c *kvCache) Region(layer int) ([]byte, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if layer < 0 || layer >= len(c.regions) {
		return nil, false
	}
	return c.regions[layer], true
}

func (c *kvCache) block(layer, block, n int) ([]byte, error) {
	if c.regions == nil {
		return nil, ErrClosed
	}
	if layer < 0 || layer >= c.spec.Layers || block < 0 || block >= c.spec.Blocks {
		return nil, fmt.Errorf("%w: layer %d block %d of %dx%d", ErrBlockRange, layer, block, c.spec.Layers, c.spec.Blocks)
	}
	if n != c.bb {
		return nil, fmt.Errorf("%w: buffer of %d bytes for a %d-byte block", ErrBlockRange, n, c.bb)
	}
	return c.regions[layer][block*c.bb : (block+1)*c.bb], nil
}

// ReadBlock copies one block into dst (len BlockBytes).
func (c *kvCache) ReadBlock(layer, block int, dst []byte) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	src, err := c.block(layer, block, len(dst))
	if err != nil {
		return err
	}
	copy(dst, src)
	return nil
}

// WriteBlock overwrites one block from src (len BlockBytes).
func (c *kvCache) WriteBlock(layer, block int, src []byte) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	dst, err := c.block(layer, block, len(src))
	if err != nil {
		return err
	}
	copy(dst, src)
	return nil
}

// Close unmaps the regions. It waits for block copies in flight; the caller
// guarantees no step is running.
func (c *kvCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	if c.mem != nil {
		if err := unix.Munmap(c.mem); err != nil {
			first = fmt.Errorf("cpu: unmapping KV cache: %w", err)
		}
	}
	if c.fd >= 0 {
		if err := unix.Close(c.fd); err != nil && first == nil {
			first = fmt.Errorf("cpu: closing KV file: %w", err)
		}
	}
	c.mem, c.regions, c.fd = nil, nil, -1
	return first
}

// kv unwraps a cache made by this backend and checks layer.
func (b *Backend) kv(c kernels.KVCache, layer int, op string) (*kvCache, []byte) {
	kc, ok := c.(*kvCache)
	if !ok {
		panic(fmt.Sprintf("cpu: %s: cache %T was not made by the cpu backend", op, c))
	}
	r, ok := kc.Region(layer)
	if !ok {
		panic(fmt.Sprintf("cpu: %s: layer %d of a %d-layer cache (or cache closed)", op, layer, kc.spec.Layers))
	}
	return kc, r
}

// StoreKV writes row i of k and v into slot slots[i].
func (b *Backend) StoreKV(c kernels.KVCache, layer int, k, v kernels.Tensor, slots []int32) {
	kc, region := b.kv(c, layer, "StoreKV")
	kk, vv := b.ten(k, "StoreKV"), b.ten(v, "StoreKV")
	s := kc.spec
	width := s.KVHeads * s.HeadDim
	if kk.rows != len(slots) || vv.rows != len(slots) || kk.cols != width || vv.cols != width {
		panic(fmt.Sprintf("cpu: StoreKV: k %dx%d, v %dx%d, %d slots, want width %d", kk.rows, kk.cols, vv.rows, vv.cols, len(slots), width))
	}
	nslots := s.Blocks * s.BlockSize
	for i, sl := range slots {
		if sl < 0 || int(sl) >= nslots {
			panic(fmt.Sprintf("cpu: StoreKV: slot %d (row %d) outside %d slots", sl, i, nslots))
		}
	}
	if len(slots) > 0 {
		cStoreKV(region, s.BlockSize, s.KVHeads, s.HeadDim, int(s.DType), kk.data, vv.data, slots)
	}
}
