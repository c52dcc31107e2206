package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Local describes this agent's registered memory; Local.NodeID is the
	// destination node grants are checked against.
	Local Descriptor
	// Secret is the cluster secret grants are signed with.
	Secret []byte
	// LeaseTTL is how long a lease lives without renewal. Reserve, every
	// chunk and Renew push the expiry to now+LeaseTTL.
	LeaseTTL time.Duration
	// MaxBlocks bounds one transfer's reservation.
	MaxBlocks int
	// TombstoneTTL is how long an ended transfer's id and epoch are
	// remembered, so a late Reserve or Open for it is refused.
	TombstoneTTL time.Duration
	// Fence, when set, guards leased blocks against in-place writers
	// (shared memory): every lease is armed with its own key.
	Fence  Fence
	Clock  Clock
	Logger *slog.Logger
}

// DefaultReceiverConfig returns defaults for local; fill Secret.
func DefaultReceiverConfig(local Descriptor) ReceiverConfig {
	return ReceiverConfig{
		Local:        local,
		LeaseTTL:     10 * time.Second,
		MaxBlocks:    local.Spec.Blocks,
		TombstoneTTL: 2 * time.Minute,
		Clock:        SystemClock{},
		Logger:       slog.Default(),
	}
}

// Validate checks the configuration.
func (c ReceiverConfig) Validate() error {
	if err := c.Local.Validate(); err != nil {
		return err
	}
	switch {
	case len(c.Secret) < MinSecretLen:
		return fmt.Errorf("%w: cluster secret shorter than %d bytes", ErrInvalid, MinSecretLen)
	case c.LeaseTTL <= 0 || c.TombstoneTTL <= 0:
		return fmt.Errorf("%w: lease and tombstone TTLs must be positive", ErrInvalid)
	case c.MaxBlocks <= 0 || c.MaxBlocks > c.Local.Spec.Blocks:
		return fmt.Errorf("%w: max blocks %d outside 1..%d", ErrInvalid, c.MaxBlocks, c.Local.Spec.Blocks)
	case c.Clock == nil || c.Logger == nil:
		return fmt.Errorf("%w: clock and logger are required", ErrInvalid)
	}
	return nil
}

type tombstone struct {
	epoch uint64
	cause error
	until time.Time
}

// Receiver holds destination leases and applies incoming transfers to its
// Memory. All methods are safe for concurrent use. Close frees every lease.
type Receiver struct {
	cfg   ReceiverConfig
	mem   Memory
	alloc BlockAllocator

	mu         sync.Mutex
	leases     map[string]*lease
	tombs      map[string]tombstone
	closed     bool
	key        uint64        // last lease key handed out
	quarantine []quarantined // blocks stalled in-place writers still hold

	wakeAt time.Time // when the reaper next runs; zero while it scans or idles; guarded by mu
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

// NewReceiver starts a receiver writing into mem and reserving from alloc.
func NewReceiver(cfg ReceiverConfig, mem Memory, alloc BlockAllocator) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if mem == nil || alloc == nil {
		return nil, fmt.Errorf("%w: receiver needs memory and an allocator", ErrInvalid)
	}
	got, want := mem.Spec(), cfg.Local.Spec
	if got.Layers != want.Layers || got.Blocks != want.Blocks || got.BlockBytes() != want.BlockBytes() {
		return nil, fmt.Errorf("%w: memory spec %+v does not match descriptor %+v", ErrInvalid, got, want)
	}
	r := &Receiver{
		cfg: cfg, mem: mem, alloc: alloc,
		leases: make(map[string]*lease),
		tombs:  make(map[string]tombstone),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go r.reap()
	return r, nil
}

// Memory is the registered memory transfers land in.
func (r *Receiver) Memory() Memory { return r.mem }

// Fence is the fence guarding leased blocks against in-place writers, or
// nil.
func (r *Receiver) Fence() Fence { return r.cfg.Fence }

// Descriptor returns the local descriptor shared at handshake.
func (r *Receiver) Descriptor() Descriptor { return r.cfg.Local }

// Handshake checks a sender's descriptor and returns the receiver's.
func (r *Receiver) Handshake(peer Descriptor) (Descriptor, error) {
	if err := peer.Validate(); err != nil {
		return Descriptor{}, err
	}
	if err := Compatible(peer, r.cfg.Local); err != nil {
		return Descriptor{}, err
	}
	return r.cfg.Local, nil
}

// Reserve allocates n destination blocks for the grant's transfer under a
// lease. A grant with a newer epoch for a live transfer id supersedes (and
// frees) the older lease; an older or equal epoch is refused.
func (r *Receiver) Reserve(ctx context.Context, g Grant, n int) (Lease, error) {
	now := r.cfg.Clock.Now()
	if err := verifyGrant(r.cfg.Secret, g, r.cfg.Local.NodeID, now); err != nil {
		return Lease{}, err
	}
	if n <= 0 || n > r.cfg.MaxBlocks {
		return Lease{}, fmt.Errorf("%w: %d blocks requested, limit %d", ErrInvalid, n, r.cfg.MaxBlocks)
	}
	l := newLease(g)
	var superseded *lease
	r.mu.Lock()
	switch old, tomb := r.leases[g.TransferID], r.tombs[g.TransferID]; {
	case r.closed:
		r.mu.Unlock()
		return Lease{}, ErrClosed
	case old != nil && old.grant.Epoch >= g.Epoch:
		r.mu.Unlock()
		return Lease{}, epochError(g, old.grant.Epoch)
	case old == nil && tomb.until.After(now) && tomb.epoch >= g.Epoch:
		r.mu.Unlock()
		return Lease{}, epochError(g, tomb.epoch)
	default:
		superseded = old
	}
	r.leases[g.TransferID] = l
	if r.cfg.Fence != nil {
		l.key = r.nextKeyLocked()
	}
	r.mu.Unlock()
	if superseded != nil {
		r.end(superseded, stateFreed, fmt.Errorf("%w: superseded by epoch %d", ErrStaleEpoch, g.Epoch), nil)
	}

	blocks, err := r.alloc.Allocate(ctx, n)
	if err == nil && len(blocks) != n {
		r.alloc.Free(blocks)
		err = fmt.Errorf("%w: allocator returned %d blocks, want %d", ErrProtocol, len(blocks), n)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrExhausted, err)
		r.end(l, stateFreed, err, nil)
		return Lease{}, err
	}
	l.mu.Lock()
	if l.state != stateAllocating { // cancelled or closed while allocating
		cause := l.cause
		l.mu.Unlock()
		r.alloc.Free(blocks)
		return Lease{}, cause
	}
	if l.key != 0 {
		r.cfg.Fence.Arm(blocks, l.key)
	}
	l.blocks = blocks
	l.owned = make(map[int32]struct{}, n)
	for _, b := range blocks {
		l.owned[b] = struct{}{}
	}
	l.state = stateReserved
	l.expiry = r.cfg.Clock.Now().Add(r.cfg.LeaseTTL)
	out := l.public()
	l.mu.Unlock()
	r.wake(out.Expiry)
	return out, nil
}

func epochError(g Grant, have uint64) error {
	if have == g.Epoch {
		return fmt.Errorf("%w: transfer %q epoch %d", ErrDuplicate, g.TransferID, g.Epoch)
	}
	return fmt.Errorf("%w: transfer %q epoch %d, receiver has seen epoch %d", ErrStaleEpoch, g.TransferID, g.Epoch, have)
}

// Renew pushes the lease's expiry to now+LeaseTTL; the receiver's owner
// calls it while it still wants the transfer.
func (r *Receiver) Renew(transferID string, epoch uint64) (time.Time, error) {
	l, err := r.lookup(transferID, epoch)
	if err != nil {
		return time.Time{}, err
	}
	l.mu.Lock()
	if l.state.final() || l.state == stateAllocating {
		l.mu.Unlock()
		return time.Time{}, r.endedError(l)
	}
	l.expiry = r.cfg.Clock.Now().Add(r.cfg.LeaseTTL)
	exp := l.expiry
	l.mu.Unlock()
	return exp, nil
}

// Cancel ends a transfer the receiver's owner no longer wants and frees its
// blocks. Cancelling an ended transfer is a no-op.
func (r *Receiver) Cancel(transferID string, reason string) {
	r.mu.Lock()
	l := r.leases[transferID]
	r.mu.Unlock()
	if l != nil {
		r.end(l, stateFreed, fmt.Errorf("%w: %s", ErrCancelled, reason), nil)
	}
}

// CancelGrant is Cancel on behalf of a sender, which must present the grant.
func (r *Receiver) CancelGrant(g Grant, reason string) error {
	if err := verifyGrant(r.cfg.Secret, g, r.cfg.Local.NodeID, r.cfg.Clock.Now()); err != nil &&
		!errors.Is(err, ErrTokenExpired) {
		return err
	}
	l, err := r.lookup(g.TransferID, g.Epoch)
	if err != nil {
		return err
	}
	r.end(l, stateFreed, fmt.Errorf("%w by sender: %s", ErrCancelled, reason), nil)
	return nil
}

// Ready waits until the transfer's KV has fully arrived and been verified,
// then hands its blocks to the caller, who owns them from then on. It
// returns the error that ended the transfer otherwise. A caller whose ctx
// ends leaves the transfer running; its lease still expires if nobody claims it.
func (r *Receiver) Ready(ctx context.Context, transferID string) ([]int32, error) {
	r.mu.Lock()
	l := r.leases[transferID]
	tomb, hasTomb := r.tombs[transferID]
	r.mu.Unlock()
	if l == nil {
		if hasTomb && tomb.cause != nil {
			return nil, tomb.cause
		}
		return nil, fmt.Errorf("%w: %q", ErrUnknownTransfer, transferID)
	}
	select {
	case <-l.settled:
	case <-ctx.Done():
		return nil, fmt.Errorf("transport: waiting for transfer %q: %w", transferID, ctx.Err())
	}
	var blocks []int32
	if !r.end(l, stateClaimed, nil, func() bool {
		blocks = append([]int32(nil), l.blocks...)
		return true
	}) {
		return nil, r.endedError(l)
	}
	return blocks, nil
}

// TransferStat is a live transfer's progress, for metrics and tests.
type TransferStat struct {
	State  string // reserved, streaming or ready
	Bytes  uint64 // payload bytes applied so far
	Expiry time.Time
}

// Stat reports a live transfer's progress; ok is false when the transfer
// is unknown or has ended.
func (r *Receiver) Stat(transferID string) (st TransferStat, ok bool) {
	r.mu.Lock()
	l := r.leases[transferID]
	r.mu.Unlock()
	if l == nil {
		return TransferStat{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return TransferStat{State: l.state.String(), Bytes: l.bytes, Expiry: l.expiry}, !l.state.final()
}

// Active is the number of transfers holding blocks.
func (r *Receiver) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.leases)
}

// Close stops the receiver and frees every lease's blocks, including
// transfers that are ready but unclaimed.
func (r *Receiver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	all := make([]*lease, 0, len(r.leases))
	for _, l := range r.leases {
		all = append(all, l)
	}
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	for _, l := range all {
		r.end(l, stateFreed, ErrClosed, nil)
	}
	if r.cfg.Fence != nil && r.retryQuarantine() {
		r.cfg.Logger.Warn("closing with KV blocks still held by stalled in-place writers", "blocks", r.Quarantined())
	}
	return nil
}

func (r *Receiver) lookup(transferID string, epoch uint64) (*lease, error) {
	r.mu.Lock()
	l := r.leases[transferID]
	tomb, hasTomb := r.tombs[transferID]
	r.mu.Unlock()
	switch {
	case l != nil && l.grant.Epoch == epoch:
		return l, nil
	case l != nil:
		return nil, fmt.Errorf("%w: transfer %q epoch %d, live epoch %d", ErrStaleEpoch, transferID, epoch, l.grant.Epoch)
	case hasTomb && tomb.cause != nil && tomb.epoch == epoch:
		return nil, tomb.cause
	case hasTomb && tomb.epoch > epoch:
		return nil, fmt.Errorf("%w: transfer %q epoch %d, receiver has seen epoch %d", ErrStaleEpoch, transferID, epoch, tomb.epoch)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownTransfer, transferID)
}

// end moves l to a final state (stateFreed or stateClaimed) if it has not
// reached one, reporting whether this call did it. Only the caller that wins
// the transition frees blocks, so every lease is freed or claimed exactly
// once. check, when set, runs under l.mu and may veto the transition (a
// lease renewed between a sweep's look and its expiry stays alive).
func (r *Receiver) end(l *lease, to leaseState, cause error, check func() bool) bool {
	l.mu.Lock()
	if l.state.final() || (to == stateClaimed && l.state != stateReady) || (check != nil && !check()) {
		l.mu.Unlock()
		return false
	}
	from := l.state
	l.state, l.cause = to, cause
	l.settleLocked()
	blocks := l.blocks
	if l.key != 0 && (from == stateReserved || from == stateStreaming) {
		// Ended before its commit: a seal that comes now must fail.
		r.cfg.Fence.Decide(blocks[0], l.key)
	}
	l.mu.Unlock()

	// Forget the lease before its blocks go back, so that anyone who sees
	// them free also sees the transfer gone.
	r.mu.Lock()
	if r.leases[l.grant.TransferID] == l {
		delete(r.leases, l.grant.TransferID)
	}
	if t, ok := r.tombs[l.grant.TransferID]; !ok || t.epoch <= l.grant.Epoch {
		r.tombs[l.grant.TransferID] = tombstone{epoch: l.grant.Epoch, cause: cause, until: r.cfg.Clock.Now().Add(r.cfg.TombstoneTTL)}
	}
	r.mu.Unlock()
	if to == stateFreed && from != stateAllocating {
		r.release(blocks, l.key)
	}
	if cause != nil {
		r.cfg.Logger.Debug("transfer ended", "transfer", l.grant.TransferID, "epoch", l.grant.Epoch, "err", cause)
	}
	return true
}

// Abandon ends a transfer at epoch whose stream never opened, its sender
// being gone: freed, unless the sender sealed it first (then it is ready).
// A transfer already streaming or ready is left to its stream and its owner.
func (r *Receiver) Abandon(transferID string, epoch uint64, cause error) {
	r.mu.Lock()
	l := r.leases[transferID]
	r.mu.Unlock()
	if l == nil || l.grant.Epoch != epoch {
		return
	}
	r.lose(l, cause, func() bool { return l.state == stateReserved })
}

// lose ends a transfer that stopped short of a commit frame: its stream
// broke, or its lease expired. An in-place sender may have sealed it first,
// which commits it one-sided (see Fence): the lease then becomes ready for
// its owner instead, and lose reports false, as when check declines.
func (r *Receiver) lose(l *lease, cause error, check func() bool) bool {
	if l.key != 0 && r.commitSealed(l, check) {
		return false
	}
	return r.end(l, stateFreed, cause, check)
}

// commitSealed makes a lease whose sender sealed it ready, and reports
// whether it did. A lease the sender had not sealed can no longer be
// sealed afterwards.
func (r *Receiver) commitSealed(l *lease, check func() bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.state != stateReserved && l.state != stateStreaming) || (check != nil && !check()) {
		return false
	}
	if !r.cfg.Fence.Decide(l.blocks[0], l.key) {
		return false
	}
	if stuck := r.cfg.Fence.Disarm(l.blocks, l.key); len(stuck) > 0 {
		// A correct sender seals only after its last write handed its
		// blocks back; a block still held belongs to a writer of this
		// lease that outlived its own seal, which no correct sender has.
		r.cfg.Logger.Error("sealed KV transfer still has a writer inside a block", "transfer", l.grant.TransferID, "blocks", len(stuck))
	}
	l.state = stateReady
	l.expiry = r.cfg.Clock.Now().Add(r.cfg.LeaseTTL)
	l.settleLocked()
	r.cfg.Logger.Debug("transfer committed by its sender's seal", "transfer", l.grant.TransferID, "epoch", l.grant.Epoch)
	return true
}

// endedError explains why l can no longer be used.
func (r *Receiver) endedError(l *lease) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.state == stateClaimed:
		return fmt.Errorf("%w: transfer %q already claimed", ErrUnknownTransfer, l.grant.TransferID)
	case l.cause != nil:
		return l.cause
	}
	return fmt.Errorf("%w: transfer %q is not live", ErrUnknownTransfer, l.grant.TransferID)
}

// wake rescans at once when a lease expiring at exp would otherwise be
// seen late; most reservations expire after the scheduled wake and cost the
// reaper nothing.
func (r *Receiver) wake(exp time.Time) {
	r.mu.Lock()
	early := r.wakeAt.IsZero() || exp.Before(r.wakeAt)
	r.mu.Unlock()
	if !early {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// reap frees leases whose expiry has passed. It sleeps until the earliest
// lease expiry, so an idle receiver costs nothing and an expired lease is
// freed promptly. Tombstones are pruned on the same passes (and at least
// once per TombstoneTTL), never scheduled one by one.
func (r *Receiver) reap() {
	defer close(r.done)
	for {
		now := r.cfg.Clock.Now()
		next := r.sweep(now)
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = r.cfg.Clock.At(next)
		}
		select {
		case <-r.stop:
			return
		case <-r.kick:
		case <-timer:
		}
	}
}

// sweep expires due leases and tombstones and returns (and records) the
// next time it must run.
func (r *Receiver) sweep(now time.Time) time.Time {
	r.mu.Lock()
	live := make([]*lease, 0, len(r.leases))
	for _, l := range r.leases {
		live = append(live, l)
	}
	var next time.Time
	for id, t := range r.tombs {
		if !t.until.After(now) {
			delete(r.tombs, id)
		}
	}
	if len(r.tombs) > 0 {
		next = now.Add(r.cfg.TombstoneTTL)
	}
	// Publish a provisional wake time before scanning, so a Reserve racing
	// this sweep kicks us when its lease might be missed.
	r.wakeAt = time.Time{}
	r.mu.Unlock()
	for _, l := range live {
		l.mu.Lock()
		exp, st := l.expiry, l.state
		l.mu.Unlock()
		if st == stateAllocating || st.final() {
			continue
		}
		if !exp.After(now) {
			cause := fmt.Errorf("%w: transfer %q at %s", ErrLeaseExpired, l.grant.TransferID, exp.UTC().Format(time.RFC3339Nano))
			if r.lose(l, cause, func() bool { return !l.expiry.After(now) }) {
				continue
			}
			l.mu.Lock()
			exp = l.expiry
			l.mu.Unlock()
		}
		if next.IsZero() || exp.Before(next) {
			next = exp
		}
	}
	if r.cfg.Fence != nil && r.retryQuarantine() {
		if retry := now.Add(quarantineRetry); next.IsZero() || retry.Before(next) {
			next = retry
		}
	}
	r.mu.Lock()
	r.wakeAt = next
	r.mu.Unlock()
	return next
}
