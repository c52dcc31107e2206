package shm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/transport"
)

// requiredSeals keep a shared file's size fixed: a peer that could shrink
// it would make our accesses to the mapping fault (SIGBUS).
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// createSealed makes a sealed memfd of size bytes and maps it read-write.
// Pages are committed on first touch, so a large file costs memory only
// where it is written.
func createSealed(name string, size int) (fd int, mem []byte, err error) {
	fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, nil, fmt.Errorf("shm: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("shm: ftruncate %d bytes: %w", size, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("shm: sealing %s: %w", name, err)
	}
	mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("shm: mmap %d bytes: %w", size, err)
	}
	return fd, mem, nil
}

// mapSealed maps a peer's file after checking it is sealed against
// resizing and exactly size bytes long. It does not take ownership of fd.
func mapSealed(fd, size, prot int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("shm: fstat shared file: %w", err)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil || seals&requiredSeals != requiredSeals || st.Size != int64(size) || size <= 0 {
		return nil, fmt.Errorf("%w: shm: shared file must be a sealed memfd of %d bytes (has %d)", transport.ErrProtocol, size, st.Size)
	}
	mem, err := unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	return mem, nil
}

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
	fd, mem, err := createSealed("tandem-kv-staging", slots*slotBytes)
	if err != nil {
		return nil, err
	}
	return &segment{fd: fd, mem: mem, slots: slots, slot: slotBytes}, nil
}

// openSegment maps a sender's segment read-only for the receiver, after
// checking it is a sealed file of exactly the announced size. It takes
// ownership of fd.
func openSegment(fd, slots, slotBytes int) (*segment, error) {
	if slots <= 0 || slotBytes <= 0 || slots > maxSlots || slotBytes > maxSlotBytes {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: shm: %d slots of %d bytes", transport.ErrProtocol, slots, slotBytes)
	}
	mem, err := mapSealed(fd, slots*slotBytes, unix.PROT_READ)
	if err != nil {
		unix.Close(fd)
		return nil, err
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
