// Package grpcx is the network backend of the transport: gRPC over mutual
// TLS. A transfer is carried by a bidirectional Push stream: the sender's
// frames (Open, Chunks with CRC32C, LayerEnds, Commit) and the receiver's
// acknowledgements share it, so completion cannot be lost apart from the
// data. A stream whose transfer committed cleanly is kept and carries the
// sender's next transfer, which then starts with its own Open; a stream
// that saw any failure is cancelled, so the receiver aborts that transfer
// and frees its blocks. HTTP/2 stream and connection windows give flow
// control: a slow receiver stops the sender's writes. Deadlines and
// cancellation bound every send and receive.
package grpcx

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/tandemserve/tandem/transport"
)

// Config configures both ends of the gRPC backend.
type Config struct {
	TLS transport.TLSConfig
	// Insecure serves and dials without TLS. It exists for tests and
	// loopback development only: a production node must never accept KV
	// data on an unauthenticated port.
	Insecure bool
	// MaxChunkBytes bounds a chunk (and so a message) in either direction.
	MaxChunkBytes int
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows: how
	// many bytes a sender may have in flight per stream and per connection.
	StreamWindow int32
	ConnWindow   int32
	// IdleStreams is how many clean push streams a Conn keeps open for the
	// next transfers; 0 opens a stream per transfer.
	IdleStreams int
	// Keepalive is how often an idle connection is probed, so a silently
	// dead peer is noticed even between transfers.
	Keepalive time.Duration
	Logger    *slog.Logger
}

// DefaultConfig returns production defaults; fill TLS.
func DefaultConfig() Config {
	return Config{
		MaxChunkBytes: 1 << 20,
		StreamWindow:  8 << 20,
		ConnWindow:    32 << 20,
		IdleStreams:   4,
		Keepalive:     10 * time.Second,
		Logger:        slog.Default(),
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if !c.Insecure {
		if err := c.TLS.Validate(); err != nil {
			return fmt.Errorf("grpcx: TLS is required (Insecure is for tests only): %w", err)
		}
	}
	switch {
	case c.MaxChunkBytes < 4<<10 || c.MaxChunkBytes > 64<<20:
		return fmt.Errorf("%w: grpcx: max chunk %d outside 4 KiB..64 MiB", transport.ErrInvalid, c.MaxChunkBytes)
	case c.StreamWindow < 64<<10 || c.ConnWindow < c.StreamWindow:
		return fmt.Errorf("%w: grpcx: windows must be >= 64 KiB and conn >= stream", transport.ErrInvalid)
	case c.IdleStreams < 0 || c.IdleStreams > 1024:
		return fmt.Errorf("%w: grpcx: idle streams %d outside 0..1024", transport.ErrInvalid, c.IdleStreams)
	case c.Keepalive <= 0 || c.Logger == nil:
		return fmt.Errorf("%w: grpcx: keepalive and logger are required", transport.ErrInvalid)
	}
	return nil
}

// maxMsg leaves room for a chunk's framing fields.
func (c Config) maxMsg() int { return c.MaxChunkBytes + 4096 }
