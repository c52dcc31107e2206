package shm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/transport"
)

// requiredSeals keep the staging file's size fixed: a sender that could
// shrink it would make the receiver's reads of the mapping fault (SIGBUS).
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// segment is a memfd staging area of slots x slotBytes, mapped into this
// process.
type segment struct {
	fd    int
	mem   []byte
	slots int
	slot  int
}

// createSegment makes and maps a sealed memfd for the sender (read-write).
func createSegment(slots, slotBytes int) (*segment, error) {
	size := slots * slotBytes
	fd, err := unix.MemfdCreate("tandem-kv-staging", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: ftruncate: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: sealing staging segment: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	return &segment{fd: fd, mem: mem, slots: slots, slot: slotBytes}, nil
}

// openSegment maps a sender's segment read-only for the receiver, after
// checking it is a sealed file of exactly the announced size. It takes
// ownership of fd.
func openSegment(fd, slots, slotBytes int) (*segment, error) {
	fail := func(err error) (*segment, error) {
		unix.Close(fd)
		return nil, err
	}
	if slots <= 0 || slotBytes <= 0 || slots > maxSlots || slotBytes > maxSlotBytes {
		return fail(fmt.Errorf("%w: shm: %d slots of %d bytes", transport.ErrProtocol, slots, slotBytes))
	}
	size := slots * slotBytes
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(fmt.Errorf("shm: fstat staging segment: %w", err))
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&requiredSeals != requiredSeals || st.Size != int64(size) {
		return fail(fmt.Errorf("%w: shm: staging segment must be a sealed memfd of %d bytes", transport.ErrProtocol, size))
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("shm: mmap: %w", err))
	}
	return &segment{fd: fd, mem: mem, slots: slots, slot: slotBytes}, nil
}

// bytes returns slot i's first n bytes.
func (s *segment) bytes(i, n int) []byte { return s.mem[i*s.slot : i*s.slot+n] }

func (s *segment) close() {
	if s.mem != nil {
		unix.Munmap(s.mem)
		s.mem = nil
	}
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}
