package grpcx

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Conn is a sender's gRPC connection to one receiver. Safe for concurrent
// use: each transfer takes a pipe of its own.
type Conn struct {
	cfg    Config
	cc     *grpc.ClientConn
	client transportv1.KVTransportClient
	peer   transport.Descriptor

	// reuse: the receiver said at handshake that its push streams carry
	// transfers back to back; with an older receiver every transfer gets
	// a fresh stream.
	reuse bool

	mu     sync.Mutex
	idle   []*pipe // clean pipes, at most cfg.IdleStreams
	closed bool
}

var (
	_ transport.Conn   = (*Conn)(nil)
	_ transport.Stream = (*stream)(nil)
)

// Dial connects to the receiver at addr and handshakes with local; it fails
// with transport.ErrIncompatible naming the mismatch when the peers' KV
// layouts differ.
func Dial(ctx context.Context, cfg Config, addr string, local transport.Descriptor) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := local.Validate(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if !cfg.Insecure {
		tlsCfg, err := cfg.TLS.Client()
		if err != nil {
			return nil, err
		}
		creds = batchedTLS{credentials.NewTLS(tlsCfg)}
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithInitialWindowSize(cfg.StreamWindow),
		grpc.WithInitialConnWindowSize(cfg.ConnWindow),
		grpc.WithWriteBufferSize(256<<10),
		grpc.WithReadBufferSize(64<<10),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.Keepalive, Timeout: cfg.Keepalive, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.maxMsg()), grpc.MaxCallSendMsgSize(cfg.maxMsg())),
	)
	if err != nil {
		return nil, fmt.Errorf("grpcx: dial %s: %w", addr, err)
	}
	c := &Conn{cfg: cfg, cc: cc, client: transportv1.NewKVTransportClient(cc)}
	var hdr metadata.MD
	resp, err := c.client.Handshake(ctx, &transportv1.HandshakeRequest{Sender: wire.Descriptor(local)}, grpc.Header(&hdr))
	if err != nil {
		cc.Close()
		return nil, fromStatus(ctx, err)
	}
	c.reuse = slices.Contains(hdr.Get(pipesHeader), pipesReuse)
	if c.peer, err = wire.FromDescriptor(resp.GetReceiver()); err == nil {
		err = transport.Compatible(local, c.peer)
	}
	if err != nil {
		cc.Close()
		return nil, err
	}
	return c, nil
}

// Peer returns the receiver's descriptor.
func (c *Conn) Peer() transport.Descriptor { return c.peer }

// MaxChunkBytes is the configured message bound.
func (c *Conn) MaxChunkBytes() int { return c.cfg.MaxChunkBytes }

// Reserve leases destination blocks at the receiver.
func (c *Conn) Reserve(ctx context.Context, g transport.Grant, n int) (transport.Lease, error) {
	if n <= 0 {
		return transport.Lease{}, fmt.Errorf("%w: %d blocks", transport.ErrInvalid, n)
	}
	resp, err := c.client.Reserve(ctx, &transportv1.ReserveRequest{Grant: wire.Grant(g), Blocks: uint32(n)})
	if err != nil {
		return transport.Lease{}, fromStatus(ctx, err)
	}
	return wire.Lease(g, resp), nil
}

// Cancel ends the transfer at the receiver.
func (c *Conn) Cancel(ctx context.Context, g transport.Grant, reason string) error {
	_, err := c.client.Cancel(ctx, &transportv1.CancelRequest{Grant: wire.Grant(g), Reason: reason})
	return fromStatus(ctx, err)
}

// Close closes the connection; open streams break and idle ones end.
func (c *Conn) Close() error {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, p := range idle {
		p.cancel()
	}
	return c.cc.Close()
}
