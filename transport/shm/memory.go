package shm

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
)

// Shareable is receiver memory whose layer regions live in one memfd: a
// sender on the same host maps the file and writes leased blocks in place,
// so a transfer costs one copy and no staging. The CPU backend's KV cache
// and Memory implement it.
type Shareable interface {
	transport.Memory
	// MemFD returns the file holding the regions and where each layer's
	// region starts in it; ok is false when the memory is not in one.
	// The descriptor stays owned by the memory.
	MemFD() (fd int, offsets []int64, ok bool)
}

// Memory is transport.Memory in a sealed memfd, for receivers whose KV
// cache is not a backend's (tests, benchmarks).
type Memory struct {
	*transport.HostMemory
	fd      int
	mem     []byte
	offsets []int64
}

var _ Shareable = (*Memory)(nil)

// NewMemory allocates zeroed regions for spec in one sealed memfd.
func NewMemory(spec kernels.KVSpec) (*Memory, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrInvalid, err)
	}
	region := spec.Blocks * spec.BlockBytes()
	fd, mem, err := createSealed("tandem-kv", spec.Layers*region)
	if err != nil {
		return nil, err
	}
	regions := make([][]byte, spec.Layers)
	offsets := make([]int64, spec.Layers)
	for l := range regions {
		regions[l] = mem[l*region : (l+1)*region : (l+1)*region]
		offsets[l] = int64(l * region)
	}
	host, err := transport.HostMemoryOver(spec, regions)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, err
	}
	return &Memory{HostMemory: host, fd: fd, mem: mem, offsets: offsets}, nil
}

// MemFD returns the memfd and each layer's offset in it.
func (m *Memory) MemFD() (int, []int64, bool) { return m.fd, m.offsets, true }

// Close unmaps the memory; senders keep their mappings until they close.
func (m *Memory) Close() error {
	if m.mem == nil {
		return nil
	}
	unix.Munmap(m.mem)
	m.mem = nil
	return unix.Close(m.fd)
}

// remote is a receiver's KV file and fence mapped into the sender, which
// writes leased blocks in place.
type remote struct {
	kv      []byte
	regions [][]byte // per layer, within kv
	fenceM  []byte
	fence   []atomic.Uint64 // per block
	seals   []atomic.Uint64 // per block; a lease's is at its first block
	writer  uint32
	// refs counts the Conn and its open in-place streams: the files are
	// unmapped when the last of them lets go, never under a copy.
	refs atomic.Int32
}

// retain takes a reference unless the mapping is already gone.
func (r *remote) retain() bool {
	for {
		n := r.refs.Load()
		if n <= 0 {
			return false
		}
		if r.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// drop releases a reference, unmapping with the last.
func (r *remote) drop() {
	if r.refs.Add(-1) == 0 {
		unix.Munmap(r.kv)
		unix.Munmap(r.fenceM)
	}
}

// mapRemote maps the files that came with a Regions answer, checking them
// against the receiver's descriptor. It does not take ownership of the
// descriptors.
func mapRemote(spec kernels.KVSpec, m regionsMsg, kvFD, fenceFD int) (*remote, error) {
	region := uint64(spec.Blocks) * uint64(spec.BlockBytes())
	if len(m.offsets) != spec.Layers || int(m.fenceBlocks) != spec.Blocks || m.writer == 0 || m.writer > maxWriters {
		return nil, fmt.Errorf("%w: shm: regions for %d layers, %d fence blocks, writer %d do not fit %d layers of %d blocks",
			transport.ErrProtocol, len(m.offsets), m.fenceBlocks, m.writer, spec.Layers, spec.Blocks)
	}
	for l, off := range m.offsets {
		if off > m.fileBytes || m.fileBytes-off < region {
			return nil, fmt.Errorf("%w: shm: layer %d region at %d overruns a %d-byte file", transport.ErrProtocol, l, off, m.fileBytes)
		}
	}
	if m.fileBytes > 1<<46 {
		return nil, fmt.Errorf("%w: shm: KV file of %d bytes", transport.ErrProtocol, m.fileBytes)
	}
	kv, err := mapSealed(kvFD, int(m.fileBytes), unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return nil, err
	}
	fm, err := mapSealed(fenceFD, fenceFileBytes(spec.Blocks), unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		unix.Munmap(kv)
		return nil, err
	}
	all := words(fm)
	r := &remote{kv: kv, fenceM: fm, fence: all[:spec.Blocks], seals: all[spec.Blocks:], writer: m.writer, regions: make([][]byte, spec.Layers)}
	for l, off := range m.offsets {
		r.regions[l] = kv[off : off+region : off+region]
	}
	r.refs.Store(1)
	return r, nil
}

// regionsMsg is the decoded Regions answer.
type regionsMsg struct {
	offsets     []uint64
	fileBytes   uint64
	fenceBlocks uint32
	writer      uint32
}
