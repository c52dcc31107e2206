package shm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Conn is a sender's connection to a receiver on the same host. Unary calls
// share one control socket; each transfer opens its own socket and segment.
type Conn struct {
	cfg   Config
	path  string
	local transport.Descriptor
	peer  transport.Descriptor

	mu   sync.Mutex // serialises unary calls on ctl
	ctl  *net.UnixConn
	r    *reader
	wbuf []byte

	// rem is the receiver's KV file and fence, mapped for in-place
	// writes; nil when the receiver offered none (the sender stages).
	rem *remote
	// keys holds the fence keys of reservations not yet pushed.
	keysMu sync.Mutex
	keys   map[string]fenceKey

	idleMu sync.Mutex
	idle   []*pipe // connections whose last push committed cleanly
	closed bool
}

// maxIdle bounds the pipes kept for reuse per Conn.
const maxIdle = 4

// maxPendingKeys bounds the fence keys of reservations never pushed nor
// cancelled that a Conn remembers.
const maxPendingKeys = 4096

// fenceKey is a reservation's fence key, for the epoch it was granted, and
// the lease's first block, where its seal word is.
type fenceKey struct {
	epoch uint64
	key   uint64
	lead  int32
}

// pipe is one push connection and, once a staged push needed it, its
// staging segment. Creating them costs a socket, a handshake,
// memfd_create and two mmaps; a committed pipe is reused, so a small
// transfer pays only its control messages.
type pipe struct {
	uc        *net.UnixConn
	r         *reader
	seg       *segment
	segShared bool // the receiver has seg mapped from an earlier push
}

func (p *pipe) close() {
	p.uc.Close()
	p.r.close()
	if p.seg != nil {
		p.seg.close()
	}
}

var (
	_ transport.Conn   = (*Conn)(nil)
	_ transport.Stream = (*stream)(nil)
)

// Dial connects to the receiver's socket at path and handshakes.
func Dial(ctx context.Context, cfg Config, path string, local transport.Descriptor) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := local.Validate(); err != nil {
		return nil, err
	}
	c := &Conn{cfg: cfg, path: path, local: local, keys: make(map[string]fenceKey)}
	ctl, r, peer, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctl, c.r, c.peer = ctl, r, peer
	if !cfg.StageOnly {
		if err := c.mapRegions(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// mapRegions asks the receiver for its KV file and fence and maps them, so
// transfers write leased blocks in place. A receiver without them (device
// memory) answers empty and transfers stage their chunks.
func (c *Conn) mapRegions(ctx context.Context) error {
	resp, err := c.call(ctx, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_MapRegions{MapRegions: &transportv1.MapRegions{}}})
	if err != nil {
		return err
	}
	m := resp.GetRegions()
	if m == nil {
		return fmt.Errorf("%w: shm: map answered with %T", transport.ErrProtocol, resp.GetKind())
	}
	if len(m.GetLayerOffsets()) == 0 {
		c.cfg.Logger.Debug("shm receiver offers no in-place writes; staging", "path", c.path)
		return nil
	}
	fds, err := c.r.takeFDs(2)
	if err != nil {
		return err
	}
	defer closeFDs(fds) // the mappings keep the files alive
	c.rem, err = mapRemote(c.peer.Spec, regionsMsg{
		offsets: m.GetLayerOffsets(), fileBytes: m.GetKvFileBytes(),
		fenceBlocks: m.GetFenceBlocks(), writer: m.GetWriter(),
	}, fds[0], fds[1])
	return err
}

// connect opens a socket and handshakes on it.
func (c *Conn) connect(ctx context.Context) (*net.UnixConn, *reader, transport.Descriptor, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, nil, transport.Descriptor{}, fmt.Errorf("%w: shm: dial %s: %w", transport.ErrPeerLost, c.path, err)
	}
	uc := nc.(*net.UnixConn)
	r := newReader(uc, 2)
	hs := &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Handshake{Handshake: &transportv1.HandshakeRequest{Sender: wire.Descriptor(c.local)}}}
	resp, err := roundTrip(ctx, uc, r, nil, hs)
	var peer transport.Descriptor
	if err == nil {
		if peer, err = wire.FromDescriptor(resp.GetHandshake().GetReceiver()); err == nil {
			err = transport.Compatible(c.local, peer)
		}
	}
	if err != nil {
		uc.Close()
		r.close()
		return nil, nil, transport.Descriptor{}, err
	}
	return uc, r, peer, nil
}

// roundTrip writes req and reads its answer, bounded by ctx.
func roundTrip(ctx context.Context, uc *net.UnixConn, r *reader, buf []byte, req *transportv1.ShmRequest) (*transportv1.ShmResponse, error) {
	stop := bindDeadline(ctx, uc)
	defer stop()
	resp := new(transportv1.ShmResponse)
	if _, err := writeMsg(uc, buf, req); err != nil {
		// A receiver that refused us wrote its reason before closing.
		if rerr := r.read(resp); rerr == nil && resp.GetFailure() != nil {
			return nil, wire.FromFailure(resp.GetFailure())
		}
		return nil, ioError(ctx, err)
	}
	if err := r.read(resp); err != nil {
		return nil, ioError(ctx, err)
	}
	if f := resp.GetFailure(); f != nil {
		return nil, wire.FromFailure(f)
	}
	return resp, nil
}

// bindDeadline makes blocking I/O on uc return when ctx ends.
func bindDeadline(ctx context.Context, uc *net.UnixConn) (stop func() bool) {
	if d, ok := ctx.Deadline(); ok {
		uc.SetDeadline(d)
	}
	return context.AfterFunc(ctx, func() { uc.SetDeadline(time.Unix(1, 0)) })
}

// ioError classifies a socket error: the caller's deadline or cancellation,
// or a lost peer.
func ioError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", transport.ErrTimeout, cerr)
		}
		return cerr
	}
	if errors.Is(err, transport.ErrProtocol) {
		return err
	}
	return fmt.Errorf("%w: shm: %w", transport.ErrPeerLost, err)
}

// InPlace reports whether the receiver's KV memory is mapped, so transfers
// (those reserved through this Conn) write leased blocks in place.
func (c *Conn) InPlace() bool { return c.rem != nil }

// Peer returns the receiver's descriptor.
func (c *Conn) Peer() transport.Descriptor { return c.peer }

// MaxChunkBytes is the staging slot size.
func (c *Conn) MaxChunkBytes() int { return c.cfg.SlotBytes }

func (c *Conn) call(ctx context.Context, req *transportv1.ShmRequest) (*transportv1.ShmResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp, err := roundTrip(ctx, c.ctl, c.r, c.wbuf, req)
	if err == nil {
		c.ctl.SetDeadline(time.Time{})
	}
	return resp, err
}

// Reserve leases destination blocks at the receiver.
func (c *Conn) Reserve(ctx context.Context, g transport.Grant, n int) (transport.Lease, error) {
	if n <= 0 {
		return transport.Lease{}, fmt.Errorf("%w: %d blocks", transport.ErrInvalid, n)
	}
	resp, err := c.call(ctx, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Reserve{Reserve: &transportv1.ReserveRequest{Grant: wire.Grant(g), Blocks: uint32(n)}}})
	if err != nil {
		return transport.Lease{}, err
	}
	l := wire.Lease(g, resp.GetReserve())
	if c.rem != nil && l.FenceKey != 0 && len(l.Blocks) == n && l.Blocks[0] >= 0 && int(l.Blocks[0]) < len(c.rem.seals) {
		c.keysMu.Lock()
		if len(c.keys) >= maxPendingKeys {
			for id := range c.keys { // forget one: that transfer will stage
				delete(c.keys, id)
				break
			}
		}
		c.keys[g.TransferID] = fenceKey{epoch: g.Epoch, key: l.FenceKey, lead: l.Blocks[0]}
		c.keysMu.Unlock()
	}
	return l, nil
}

// takeKey returns (and forgets) the fence key reserved for g; the key is 0
// when there is none.
func (c *Conn) takeKey(g transport.Grant) fenceKey {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	k, ok := c.keys[g.TransferID]
	if !ok {
		return fenceKey{}
	}
	delete(c.keys, g.TransferID)
	if k.epoch != g.Epoch {
		return fenceKey{}
	}
	return k
}

// Cancel ends the transfer at the receiver.
func (c *Conn) Cancel(ctx context.Context, g transport.Grant, reason string) error {
	c.takeKey(g)
	_, err := c.call(ctx, &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Cancel{Cancel: &transportv1.CancelRequest{Grant: wire.Grant(g), Reason: reason}}})
	return err
}

// Close closes the control socket and idle pipes; open streams have their
// own and end on their own Close.
func (c *Conn) Close() error {
	c.idleMu.Lock()
	first := !c.closed
	c.closed = true
	idle := c.idle
	c.idle = nil
	c.idleMu.Unlock()
	for _, p := range idle {
		p.close()
	}
	if c.rem != nil && first {
		c.rem.drop() // unmapped once the last in-place stream closes too
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.close()
	return c.ctl.Close()
}
