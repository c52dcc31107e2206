// Package dialer picks a transport backend per peer: shared memory when the
// receiver runs on this host and offers a socket, gRPC over mutual TLS
// otherwise. A failed shared-memory dial falls back to gRPC, so a stale
// socket path costs one attempt, not the transfer.
package dialer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/shm"
)

// Peer is how a receiver can be reached, as published by the cluster.
type Peer struct {
	NodeID    string
	HostID    string // transport.LocalHostID() of the receiver's machine
	GRPCAddr  string // host:port of its KVTransport service
	ShmSocket string // unix socket path of its shm server; empty if none
}

// Kind names the backend a connection uses.
type Kind string

const (
	KindSHM  Kind = "shm"
	KindGRPC Kind = "grpc"
)

// Config holds both backends' settings and the local descriptor.
type Config struct {
	Local  transport.Descriptor
	GRPC   grpcx.Config
	SHM    shm.Config
	Logger *slog.Logger
}

// ErrNoRoute reports a peer with no usable address.
var ErrNoRoute = errors.New("dialer: no route to peer")

// Dial connects to peer with the best backend available.
func Dial(ctx context.Context, cfg Config, peer Peer) (transport.Conn, Kind, error) {
	if cfg.Logger == nil {
		return nil, "", fmt.Errorf("%w: dialer: logger is required", transport.ErrInvalid)
	}
	var shmErr error
	if peer.ShmSocket != "" && peer.HostID != "" && peer.HostID == cfg.Local.HostID {
		c, err := shm.Dial(ctx, cfg.SHM, peer.ShmSocket, cfg.Local)
		if err == nil {
			return c, KindSHM, nil
		}
		if errors.Is(err, transport.ErrIncompatible) || ctx.Err() != nil {
			return nil, "", err // gRPC would fail the same way
		}
		shmErr = err
		cfg.Logger.Warn("shared-memory dial failed; using gRPC", "peer", peer.NodeID, "err", err)
	}
	if peer.GRPCAddr == "" {
		if shmErr != nil {
			return nil, "", fmt.Errorf("%w: %s: %w", ErrNoRoute, peer.NodeID, shmErr)
		}
		return nil, "", fmt.Errorf("%w: %s has no gRPC address", ErrNoRoute, peer.NodeID)
	}
	c, err := grpcx.Dial(ctx, cfg.GRPC, peer.GRPCAddr, cfg.Local)
	if err != nil {
		return nil, "", err
	}
	return c, KindGRPC, nil
}
