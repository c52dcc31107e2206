package transport

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// Memory is a registered KV block array: Layers regions of Blocks blocks of
// BlockBytes bytes. Host memory exposes its regions for zero-copy access;
// device memory copies through ReadBlock/WriteBlock.
//
// Concurrency: the transport calls these from its stream goroutines, only for
// blocks it holds under a lease (receiver) or that the caller pinned for the
// transfer (sender); the owner guarantees nothing else touches those blocks.
type Memory interface {
	Spec() kernels.KVSpec
	// Region returns layer's whole block array when host-addressable.
	Region(layer int) (region []byte, ok bool)
	ReadBlock(layer, block int, dst []byte) error
	WriteBlock(layer, block int, src []byte) error
}

var (
	_ Memory = (*HostMemory)(nil)
	_ Memory = (kernels.KVCache)(nil)
)

// HostMemory is Memory over plain byte slices, for CPU caches and tests.
type HostMemory struct {
	spec    kernels.KVSpec
	regions [][]byte
}

// NewHostMemory allocates zeroed regions for spec.
func NewHostMemory(spec kernels.KVSpec) (*HostMemory, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m := &HostMemory{spec: spec, regions: make([][]byte, spec.Layers)}
	size := spec.Blocks * spec.BlockBytes()
	for l := range m.regions {
		m.regions[l] = make([]byte, size)
	}
	return m, nil
}

// HostMemoryOver wraps caller-allocated regions, one per layer of
// exactly spec.Blocks*BlockBytes bytes (memory shared with another process,
// for instance).
func HostMemoryOver(spec kernels.KVSpec, regions [][]byte) (*HostMemory, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	size := spec.Blocks * spec.BlockBytes()
	if len(regions) != spec.Layers {
		return nil, fmt.Errorf("%w: %d regions for %d layers", ErrInvalid, len(regions), spec.Layers)
	}
	for l, r := range regions {
		if len(r) != size {
			return nil, fmt.Errorf("%w: region %d has %d bytes, want %d", ErrInvalid, l, len(r), size)
		}
	}
	return &HostMemory{spec: spec, regions: regions}, nil
}

// Spec returns the memory's shape.
func (m *HostMemory) Spec() kernels.KVSpec { return m.spec }

// Region returns layer's block array.
func (m *HostMemory) Region(layer int) ([]byte, bool) {
	if layer < 0 || layer >= len(m.regions) {
		return nil, false
	}
	return m.regions[layer], true
}

// ReadBlock copies one block into dst.
func (m *HostMemory) ReadBlock(layer, block int, dst []byte) error {
	b, err := m.block(layer, block, len(dst))
	if err != nil {
		return err
	}
	copy(dst, b)
	return nil
}

// WriteBlock overwrites one block from src.
func (m *HostMemory) WriteBlock(layer, block int, src []byte) error {
	b, err := m.block(layer, block, len(src))
	if err != nil {
		return err
	}
	copy(b, src)
	return nil
}

func (m *HostMemory) block(layer, block, n int) ([]byte, error) {
	bb := m.spec.BlockBytes()
	if layer < 0 || layer >= len(m.regions) || block < 0 || block >= m.spec.Blocks || n != bb {
		return nil, fmt.Errorf("%w: block %d of layer %d (%d bytes) outside %d layers x %d blocks of %d bytes",
			ErrInvalid, block, layer, n, m.spec.Layers, m.spec.Blocks, bb)
	}
	return m.regions[layer][block*bb : (block+1)*bb], nil
}
