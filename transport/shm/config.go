// Package shm is the same-host transport backend. Only small protobuf
// control messages travel on a unix socket; the payload moves through
// shared memory in one of two ways.
//
// In place (the receiver's KV memory is a sealed memfd, as the CPU
// backend's cache is, and the receiver keeps a Fence): the sender maps the
// receiver's KV file and fence once per connection and copies each block
// straight into its leased destination block, holding that block's fence
// word for the copy. The receiver arms a lease's words with the lease's key
// and disarms them at commit and whenever the lease ends, so a stale
// transfer can never write into reused blocks (see transport.Fence). One copy
// per byte, no staging, no checksum: the bytes never leave memory.
//
// Staged (any other receiver memory, or Config.StageOnly): the sender copies
// each chunk into a slot of a sealed memfd staging segment it shares with the
// receiver; the receiver checks the grant, lease and CRC32C and copies the
// slot into its KV region under the lease lock. Slots return to the sender
// with SlotFree acknowledgements, which is the path's flow control.
//
// The socket is the authentication boundary: it lives in a directory only
// the cluster's user can enter, is created 0600, and every connection's
// peer credentials (SO_PEERCRED) must name an allowed uid. A sender writing
// in place can write any block of the receiver's KV file: the fence guards
// against stale transfers, not hostile processes, so only uids as trusted as
// the receiver's own may be allowed.
package shm

import (
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/tandemserve/tandem/transport"
)

const (
	maxSlots     = 64
	maxSlotBytes = 64 << 20
)

// Config configures both ends of the shared-memory backend.
type Config struct {
	// Slots and SlotBytes size each stream's staging segment: Slots chunks
	// may be in flight, each at most SlotBytes.
	Slots     int
	SlotBytes int
	// AllowedUIDs may connect; empty means only this process's uid.
	// A sender writing in place maps the receiver's whole KV file, so
	// list only uids as trusted as the receiver's own.
	AllowedUIDs []int
	// StageOnly makes a sender stage every chunk even when the receiver
	// offers in-place writes.
	StageOnly bool
	// StreamBytes: an in-place transfer of at least this many bytes is
	// written past the cache, each layer's adjacent blocks as one copy
	// (non-temporal stores); a smaller one block by block into the cache,
	// where the receiver reads it next. About the last-level cache's size.
	StreamBytes int
	Logger      *slog.Logger
}

// DefaultConfig returns the defaults: 4 slots of 1 MiB, transfers of 32 MiB
// and more streamed past the cache.
func DefaultConfig() Config {
	return Config{Slots: 4, SlotBytes: 1 << 20, StreamBytes: 32 << 20, Logger: slog.Default()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Slots <= 0 || c.Slots > maxSlots:
		return fmt.Errorf("%w: shm: %d slots outside 1..%d", transport.ErrInvalid, c.Slots, maxSlots)
	case c.SlotBytes < 4<<10 || c.SlotBytes > maxSlotBytes:
		return fmt.Errorf("%w: shm: slot of %d bytes outside 4 KiB..64 MiB", transport.ErrInvalid, c.SlotBytes)
	case c.StreamBytes < 0:
		return fmt.Errorf("%w: shm: negative StreamBytes %d", transport.ErrInvalid, c.StreamBytes)
	case c.Logger == nil:
		return fmt.Errorf("%w: shm: logger is required", transport.ErrInvalid)
	}
	return nil
}

func (c Config) allowed(uid int) bool {
	if len(c.AllowedUIDs) == 0 {
		return uid == os.Getuid()
	}
	return slices.Contains(c.AllowedUIDs, uid)
}
