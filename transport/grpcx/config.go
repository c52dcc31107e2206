// Package grpcx is the network backend of the transport: gRPC over mutual
// TLS, one bidirectional stream per transfer. The sender's frames (Open,
// Chunks with CRC32C, LayerEnds, Commit) and the receiver's acknowledgements
// share the stream, so completion cannot be lost apart from the data.
// HTTP/2 stream and connection windows give flow control: a slow receiver
// stops the sender's writes. Deadlines and cancellation travel with the
// stream; a stream that breaks before its commit frees the receiver's blocks.
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
	case c.Keepalive <= 0 || c.Logger == nil:
		return fmt.Errorf("%w: grpcx: keepalive and logger are required", transport.ErrInvalid)
	}
	return nil
}

// maxMsg leaves room for a chunk's framing fields.
func (c Config) maxMsg() int { return c.MaxChunkBytes + 4096 }
