// Package shm is the same-host transport backend. The sender copies each
// chunk once into a staging slot of a sealed memfd segment it shares with
// the receiver (the descriptor crosses a unix socket with SCM_RIGHTS); only
// small protobuf control messages travel on the socket. The receiver checks
// the grant, lease and CRC32C and copies the slot into its KV region, under
// the lease lock, so fencing is the same as on the network: a sender never
// writes into receiver KV memory directly, and a stale transfer's bytes can
// only ever reach its own staging segment. Slots return to the sender with
// SlotFree acknowledgements, which is the backend's flow control.
//
// The socket is the authentication boundary: it lives in a directory only
// the cluster's user can enter, is created 0600, and every connection's
// peer credentials (SO_PEERCRED) must name an allowed uid.
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
	Logger    *slog.Logger
}

// DefaultConfig returns the defaults: 4 slots of 1 MiB.
func DefaultConfig() Config {
	return Config{Slots: 4, SlotBytes: 1 << 20, Logger: slog.Default()}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Slots <= 0 || c.Slots > maxSlots:
		return fmt.Errorf("%w: shm: %d slots outside 1..%d", transport.ErrInvalid, c.Slots, maxSlots)
	case c.SlotBytes < 4<<10 || c.SlotBytes > maxSlotBytes:
		return fmt.Errorf("%w: shm: slot of %d bytes outside 4 KiB..64 MiB", transport.ErrInvalid, c.SlotBytes)
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
