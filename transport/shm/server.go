package shm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/wire"
)

// Listen creates the receiver's socket at path. The directory must exist
// and be private (no group or other access): the socket is reachable by
// anyone who can reach the directory.
func Listen(path string) (*net.UnixListener, error) {
	st, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("shm: socket directory: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: shm: socket directory %s is accessible to others (%v)", transport.ErrInvalid, filepath.Dir(path), st.Mode().Perm())
	}
	old := unix.Umask(0o177) // socket file 0600; Umask is process-wide but only for this call
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("shm: listen: %w", err)
	}
	return lis, nil
}

// Server feeds transfers arriving over shared memory into a Receiver.
type Server struct {
	cfg  Config
	recv *transport.Receiver

	// ctx ends at Close, interrupting allocations that wait for blocks.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	lis    *net.UnixListener
	conns  map[*net.UnixConn]struct{}
	closed bool
	wg     sync.WaitGroup
	// unopened ties each reservation to the connection that made it until
	// a stream opens the transfer. An in-place sender holds its Open back
	// while it copies, so a sender that dies before its first write has
	// only this connection to show for it: when the connection ends and
	// its process has exited, its unopened reservations are abandoned at
	// once rather than at expiry.
	unopened map[string]reservation
}

// reservation is a transfer reserved through conn h and not yet opened.
type reservation struct {
	h     *conn
	epoch uint64
}

// maxUnopened bounds the reservations a server tracks; beyond it, entries
// whose transfer has moved on (opened elsewhere, cancelled, expired) are
// dropped.
const maxUnopened = 1 << 16

// NewServer builds a server for recv.
func NewServer(cfg Config, recv *transport.Receiver) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if f, ok := recv.Fence().(*Fence); ok && f.Blocks() != recv.Descriptor().Spec.Blocks {
		return nil, fmt.Errorf("%w: shm: fence of %d blocks guards a receiver of %d", transport.ErrInvalid, f.Blocks(), recv.Descriptor().Spec.Blocks)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, recv: recv, ctx: ctx, cancel: cancel, conns: make(map[*net.UnixConn]struct{}), unopened: make(map[string]reservation)}, nil
}

// Serve accepts connections until Close, then returns nil.
func (s *Server) Serve(lis *net.UnixListener) error {
	s.mu.Lock()
	if s.closed || s.lis != nil {
		s.mu.Unlock()
		lis.Close()
		return fmt.Errorf("%w: shm: server closed or already serving", transport.ErrClosed)
	}
	s.lis = lis
	s.wg.Add(1) // Serve itself, so Close waits for the accept loop
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		c, err := lis.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("shm: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, breaks every connection (their transfers fail and
// free their blocks) and waits for the handlers.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	s.closed = true
	if s.lis != nil {
		s.lis.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// conn is one accepted connection, served by one goroutine.
type conn struct {
	s    *Server
	c    *net.UnixConn
	r    *reader
	wbuf []byte
	out  []byte   // acknowledgements waiting to share one write
	seg  *segment // staging of the last push, kept for reuse
	pid  int      // the peer process, from its socket credentials
	// pidfd is the peer process, opened at its first reservation, so that
	// its exit can be told from a recycled pid; -1 until then.
	pidfd int
}

func (s *Server) handle(c *net.UnixConn) {
	defer c.Close()
	h := &conn{s: s, c: c, r: newReader(c, 1), pidfd: -1}
	defer h.r.close()
	defer func() {
		if h.seg != nil {
			h.seg.close()
		}
	}()
	if err := h.checkPeer(); err != nil {
		h.fail(err)
		return
	}
	err := h.serve()
	if err != nil && !errors.Is(err, io.EOF) {
		s.cfg.Logger.Debug("shm connection ended", "err", err)
		h.fail(err)
	}
	s.abandonIfGone(h)
}

// reserved notes a reservation made through h.
func (s *Server) reserved(h *conn, g transport.Grant) {
	if h.pidfd < 0 {
		if fd, err := unix.PidfdOpen(h.pid, 0); err == nil {
			h.pidfd = fd
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.unopened) >= maxUnopened {
		for id, r := range s.unopened {
			if st, ok := s.recv.Stat(id); !ok || st.State != "reserved" || r.h == nil {
				delete(s.unopened, id)
			}
		}
	}
	s.unopened[g.TransferID] = reservation{h: h, epoch: g.Epoch}
}

// opened forgets a reservation whose stream opened (or was cancelled).
func (s *Server) opened(transferID string) {
	s.mu.Lock()
	delete(s.unopened, transferID)
	s.mu.Unlock()
}

// senderExitWait bounds how long a closed connection's server waits to see
// its sender process exit: the kernel closes a dying process's sockets
// before it reports the exit.
const senderExitWait = 2 * time.Second

// abandonIfGone ends the reservations h made that no stream opened, once
// h's sender process has exited. A sender that merely closed this
// connection (its Conn) keeps them: its streams open or cancel them on
// their own, and otherwise they expire.
func (s *Server) abandonIfGone(h *conn) {
	defer func() {
		if h.pidfd >= 0 {
			unix.Close(h.pidfd)
		}
	}()
	var gone []string
	var epochs []uint64
	s.mu.Lock()
	for id, r := range s.unopened {
		if r.h == h {
			gone, epochs = append(gone, id), append(epochs, r.epoch)
			delete(s.unopened, id)
		}
	}
	s.mu.Unlock()
	if len(gone) == 0 || !processExits(s.ctx, h.pidfd, h.pid, senderExitWait) {
		return
	}
	for i, id := range gone {
		s.recv.Abandon(id, epochs[i], fmt.Errorf("%w: shm: the sender process exited before its stream opened", transport.ErrPeerLost))
	}
}

// processExits reports whether the process behind pidfd (or pid, where the
// kernel has no pidfds) exits within wait; it gives up when ctx ends.
func processExits(ctx context.Context, pidfd, pid int, wait time.Duration) bool {
	if pidfd < 0 && pid <= 0 {
		return false // not visible from this pid namespace
	}
	const step = 20 * time.Millisecond
	for deadline := time.Now().Add(wait); ctx.Err() == nil && time.Now().Before(deadline); {
		if pidfd >= 0 {
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(step.Milliseconds()))
			if err == nil && n == 1 {
				return true // a pidfd polls readable once its process exits
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				return false
			}
			continue
		}
		if errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			return true
		}
		time.Sleep(step)
	}
	return false
}

func (h *conn) checkPeer() error {
	raw, err := h.c.SyscallConn()
	if err != nil {
		return fmt.Errorf("shm: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return fmt.Errorf("shm: %w", err)
	}
	if credErr != nil {
		return fmt.Errorf("%w: shm: peer credentials: %w", transport.ErrUnauthenticated, credErr)
	}
	if !h.s.cfg.allowed(int(cred.Uid)) {
		return fmt.Errorf("%w: shm: uid %d may not connect", transport.ErrUnauthenticated, cred.Uid)
	}
	h.pid = int(cred.Pid)
	return nil
}

// reply writes m at once, after any acknowledgements still queued.
func (h *conn) reply(m *transportv1.ShmResponse) error {
	return h.queue(m, true)
}

// ack queues an acknowledgement and writes the queue unless another frame
// has already been read in: a sender that sent several frames at once gets
// their answers in one write. The last frame of a burst (the commit
// included) always flushes, since nothing follows it in the buffer.
func (h *conn) ack(m *transportv1.ShmResponse) error {
	return h.queue(m, !h.r.buffered())
}

func (h *conn) queue(m *transportv1.ShmResponse, flush bool) error {
	var err error
	if h.out, err = appendMsg(h.out, m); err != nil || !flush {
		return err
	}
	_, err = h.c.Write(h.out)
	h.out = h.out[:0]
	if err != nil {
		return fmt.Errorf("%w: shm: %w", transport.ErrPeerLost, err)
	}
	return nil
}

func (h *conn) fail(err error) {
	_ = h.reply(&transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Failure{Failure: wire.Failure(err)}})
}

// serve answers a handshake, then unary requests, until a StartPush turns
// the connection into one transfer's stream.
func (h *conn) serve() error {
	req := new(transportv1.ShmRequest)
	if err := h.r.read(req); err != nil {
		return err
	}
	hs := req.GetHandshake()
	if hs == nil {
		return fmt.Errorf("%w: shm: first message must be a handshake", transport.ErrProtocol)
	}
	peer, err := wire.FromDescriptor(hs.GetSender())
	if err != nil {
		return err
	}
	local, err := h.s.recv.Handshake(peer)
	if err != nil {
		return err
	}
	if err := h.reply(&transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Handshake{Handshake: &transportv1.HandshakeResponse{Receiver: wire.Descriptor(local)}}}); err != nil {
		return err
	}
	for {
		req.Reset()
		if err := h.r.read(req); err != nil {
			return err
		}
		var resp *transportv1.ShmResponse
		switch k := req.GetKind().(type) {
		case *transportv1.ShmRequest_Reserve:
			resp = h.reserve(k.Reserve)
		case *transportv1.ShmRequest_Cancel:
			resp = h.cancel(k.Cancel)
		case *transportv1.ShmRequest_MapRegions:
			if err := h.mapRegions(); err != nil {
				return err
			}
			continue
		case *transportv1.ShmRequest_StartPush:
			if err := h.push(k.StartPush); err != nil {
				return err
			}
			continue // committed: the connection may carry another push
		default:
			return fmt.Errorf("%w: shm: unexpected request %T", transport.ErrProtocol, k)
		}
		if err := h.reply(resp); err != nil {
			return err
		}
	}
}

func failure(err error) *transportv1.ShmResponse {
	return &transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Failure{Failure: wire.Failure(err)}}
}

func (h *conn) reserve(m *transportv1.ReserveRequest) *transportv1.ShmResponse {
	g, err := wire.FromGrant(m.GetGrant())
	if err != nil {
		return failure(err)
	}
	n, err := wire.Blocks(m.GetBlocks())
	if err != nil {
		return failure(err)
	}
	l, err := h.s.recv.Reserve(h.s.ctx, g, n)
	if err != nil {
		return failure(err)
	}
	h.s.reserved(h, g)
	return &transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Reserve{Reserve: &transportv1.ReserveResponse{Blocks: l.Blocks, LeaseExpiryUnixNano: l.Expiry.UnixNano(), FenceKey: l.FenceKey}}}
}

func (h *conn) cancel(m *transportv1.CancelRequest) *transportv1.ShmResponse {
	g, err := wire.FromGrant(m.GetGrant())
	if err == nil {
		h.s.opened(g.TransferID)
		err = h.s.recv.CancelGrant(g, m.GetReason())
	}
	if err != nil {
		return failure(err)
	}
	return &transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Cancel{Cancel: &transportv1.CancelResponse{}}}
}

// mapRegions shares the KV file and the fence with a sender that will write
// leased blocks in place. Without both (device memory, no fence, too many
// writer processes) the answer is empty and the sender stages its chunks.
func (h *conn) mapRegions() error {
	empty := &transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Regions{Regions: &transportv1.Regions{}}}
	fence, _ := h.s.recv.Fence().(*Fence)
	mem, _ := h.s.recv.Memory().(Shareable)
	if fence == nil || mem == nil {
		return h.reply(empty)
	}
	fd, offsets, ok := mem.MemFD()
	var st unix.Stat_t
	if ok {
		ok = unix.Fstat(fd, &st) == nil
	}
	if !ok {
		return h.reply(empty)
	}
	writer, err := fence.register(h.pid)
	if err != nil {
		h.s.cfg.Logger.Warn("shm sender falls back to staging", "pid", h.pid, "err", err)
		return h.reply(empty)
	}
	m := &transportv1.Regions{KvFileBytes: uint64(st.Size), FenceBlocks: uint32(fence.Blocks()), Writer: writer}
	for _, off := range offsets {
		m.LayerOffsets = append(m.LayerOffsets, uint64(off))
	}
	h.wbuf, err = writeMsg(h.c, h.wbuf, &transportv1.ShmResponse{Kind: &transportv1.ShmResponse_Regions{Regions: m}}, fd, fence.fd)
	if err != nil {
		return fmt.Errorf("%w: shm: %w", transport.ErrPeerLost, err)
	}
	return nil
}
