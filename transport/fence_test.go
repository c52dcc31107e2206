package transport_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// recordingFence keeps each block's armed key and each lease's seal word;
// blocks in hold stay armed (a writer is inside them) when disarmed.
type recordingFence struct {
	mu    sync.Mutex
	armed map[int32]uint64
	hold  map[int32]bool
	seals map[int32]sealWord
}

type sealWord struct {
	key    uint64
	sealed bool
}

func newRecordingFence() *recordingFence {
	return &recordingFence{armed: map[int32]uint64{}, hold: map[int32]bool{}, seals: map[int32]sealWord{}}
}

func (f *recordingFence) Arm(blocks []int32, key uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range blocks {
		f.armed[b] = key
	}
	f.seals[blocks[0]] = sealWord{key: key}
}

func (f *recordingFence) Decide(lead int32, key uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.seals[lead]
	if w.key != key {
		return false
	}
	delete(f.seals, lead)
	return w.sealed
}

// seal is the sender's side of Decide: it commits the lease whose seal word
// is at lead, unless the receiver settled the word first.
func (f *recordingFence) seal(lead int32, key uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.seals[lead]
	if w.key != key || w.sealed {
		return false
	}
	f.seals[lead] = sealWord{key: key, sealed: true}
	return true
}

func (f *recordingFence) Disarm(blocks []int32, key uint64) (stuck []int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range blocks {
		switch {
		case f.armed[b] != key:
		case f.hold[b]:
			stuck = append(stuck, b)
		default:
			delete(f.armed, b)
		}
	}
	return stuck
}

func (f *recordingFence) armedWith(b int32) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed[b]
}

func (f *recordingFence) setHold(b int32, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold[b] = on
}

func newFencedReceiver(t *testing.T, fence transport.Fence) (*transport.Receiver, *transporttest.Allocator, *transporttest.FakeClock) {
	t.Helper()
	spec := transporttest.Spec()
	mem, err := transport.NewHostMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	alloc := transporttest.NewAllocator(spec.Blocks)
	clock := transporttest.NewFakeClock()
	cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	cfg.Secret, cfg.Clock, cfg.LeaseTTL, cfg.Fence = transporttest.Secret, clock, ttl, fence
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	r, err := transport.NewReceiver(cfg, mem, alloc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, alloc, clock
}

// streamInPlace opens an in-place stream for a fresh reservation and ends
// every layer.
func streamInPlace(t *testing.T, r *transport.Receiver, clock *transporttest.FakeClock, id string) (*transport.Inbound, transport.Lease, uint64) {
	t.Helper()
	g := transporttest.Grant(t, id, 1, "decode-1", clock.Now())
	l, err := r.Reserve(context.Background(), g, 3)
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.OpenInPlace(g, l.Blocks, 1)
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(2)
	for layer := range transporttest.Spec().Layers {
		if err := in.LayerEnd(seq, layer); err != nil {
			t.Fatal(err)
		}
		seq++
	}
	return in, l, seq
}

func TestFence_LeaseLifecycle(t *testing.T) {
	fence := newRecordingFence()
	r, alloc, clock := newFencedReceiver(t, fence)

	in, a, seq := streamInPlace(t, r, clock, "a")
	_, b, _ := streamInPlace(t, r, clock, "b")
	if a.FenceKey == 0 || b.FenceKey == 0 || a.FenceKey == b.FenceKey {
		t.Fatalf("fence keys %d and %d, want distinct non-zero keys", a.FenceKey, b.FenceKey)
	}
	for _, blk := range a.Blocks {
		if got := fence.armedWith(blk); got != a.FenceKey {
			t.Fatalf("block %d armed with %d, want lease key %d", blk, got, a.FenceKey)
		}
	}
	if !fence.seal(a.Blocks[0], a.FenceKey) {
		t.Fatal("sealing a streaming lease failed")
	}
	if _, err := in.Commit(seq); err != nil {
		t.Fatal(err)
	}
	for _, blk := range a.Blocks {
		if got := fence.armedWith(blk); got != 0 {
			t.Errorf("committed block %d still open to writers (key %d)", blk, got)
		}
	}
	blocks, err := r.Ready(context.Background(), "a")
	if err != nil || len(blocks) != len(a.Blocks) {
		t.Fatalf("Ready = %v, %v", blocks, err)
	}
	alloc.Claim(blocks)

	// A writer stalled inside one of b's blocks keeps that block out of
	// the pool when b is cancelled, until it lets go.
	held := b.Blocks[1]
	fence.setHold(held, true)
	r.Cancel("b", "owner went away")
	if q := r.Quarantined(); q != 1 {
		t.Fatalf("%d blocks quarantined, want 1", q)
	}
	if inUse := alloc.InUse(); len(inUse) != 1 || inUse[0] != held {
		t.Fatalf("blocks in use %v, want the held block %d alone", inUse, held)
	}
	fence.setHold(held, false)
	clock.Advance(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for (r.Quarantined() != 0 || len(alloc.InUse()) != 0) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r.Quarantined() != 0 || len(alloc.InUse()) != 0 || fence.armedWith(held) != 0 {
		t.Fatalf("released block %d not disarmed and returned: quarantined %d, %+v", held, r.Quarantined(), alloc.Stats())
	}
}

func TestFence_InPlaceRefusals(t *testing.T) {
	fence := newRecordingFence()
	r, alloc, clock := newFencedReceiver(t, fence)
	g := transporttest.Grant(t, "c", 1, "decode-1", clock.Now())
	l, err := r.Reserve(context.Background(), g, 2)
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.OpenInPlace(g, l.Blocks, 1)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 100)
	if err := in.Chunk(2, 0, 0, data, transport.Checksum(data)); !errors.Is(err, transport.ErrProtocol) {
		t.Fatalf("chunk on an in-place stream = %v, want ErrProtocol", err)
	}
	if !alloc.WaitFree(5*time.Second) || fence.armedWith(l.Blocks[0]) != 0 {
		t.Fatalf("failed transfer's blocks not disarmed and freed: %+v", alloc.Stats())
	}

	unfenced, _, clock2 := newFencedReceiver(t, nil)
	g2 := transporttest.Grant(t, "d", 1, "decode-1", clock2.Now())
	l2, err := unfenced.Reserve(context.Background(), g2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if l2.FenceKey != 0 {
		t.Errorf("receiver without a fence issued key %d", l2.FenceKey)
	}
	if _, err := unfenced.OpenInPlace(g2, l2.Blocks, 1); !errors.Is(err, transport.ErrProtocol) {
		t.Fatalf("in-place open without a fence = %v, want ErrProtocol", err)
	}
	unfenced.Cancel("d", "test over")
}

// The seal word decides, exactly once, whether an in-place transfer
// committed: a seal that came first makes the lease ready whatever ends its
// stream or its lease afterwards (except the owner's own cancel), and once
// the receiver has ended a lease no seal can follow.
func TestFence_SealDecidesTheCommit(t *testing.T) {
	type step int
	const (
		seal step = iota
		open
		breakStream
		expire
		cancel
		commit
		abandon
		lateOpen // an Open read after the lease settled: refused, harmless
	)
	for _, tc := range []struct {
		name       string
		steps      []step
		wantReady  bool
		wantErr    error // from Ready when not ready
		commitFail error // from the commit step
	}{
		{name: "sealed, then the stream breaks", steps: []step{open, seal, breakStream}, wantReady: true},
		{name: "sealed, then the lease expires", steps: []step{open, seal, expire}, wantReady: true},
		{name: "sealed before the open arrived, then the lease expires", steps: []step{seal, expire}, wantReady: true},
		{name: "sealed, then committed", steps: []step{open, seal, commit}, wantReady: true},
		{name: "the stream breaks before the seal", steps: []step{open, breakStream}, wantErr: transport.ErrPeerLost},
		{name: "the lease expires before the seal", steps: []step{open, expire}, wantErr: transport.ErrLeaseExpired},
		{name: "the owner cancels after the seal", steps: []step{open, seal, cancel}, wantErr: transport.ErrCancelled},
		{name: "an in-place commit without a seal", steps: []step{open, commit}, wantErr: transport.ErrProtocol, commitFail: transport.ErrProtocol},
		{name: "sealed before the open arrived, then the sender's connection closes", steps: []step{seal, abandon}, wantReady: true},
		{name: "sealed, expired, then the open arrives", steps: []step{seal, expire, lateOpen}, wantReady: true},
		{name: "the sender's connection closes before the open", steps: []step{abandon}, wantErr: transport.ErrPeerLost},
		{name: "an opened stream outlives its sender's control connection", steps: []step{open, abandon, seal, commit}, wantReady: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fence := newRecordingFence()
			r, alloc, clock := newFencedReceiver(t, fence)
			g := transporttest.Grant(t, "t", 1, "decode-1", clock.Now())
			l, err := r.Reserve(context.Background(), g, 3)
			if err != nil {
				t.Fatal(err)
			}
			var in *transport.Inbound
			seq := uint64(2)
			for _, s := range tc.steps {
				switch s {
				case seal:
					if !fence.seal(l.Blocks[0], l.FenceKey) {
						t.Fatal("sealing a live lease failed")
					}
				case open:
					if in, err = r.OpenInPlace(g, l.Blocks, 1); err != nil {
						t.Fatal(err)
					}
					for layer := range transporttest.Spec().Layers {
						if err := in.LayerEnd(seq, layer); err != nil {
							t.Fatal(err)
						}
						seq++
					}
				case breakStream:
					in.Abort(transport.ErrPeerLost)
				case expire:
					clock.Advance(ttl + time.Second)
					deadline := time.Now().Add(5 * time.Second)
					for {
						st, ok := r.Stat("t")
						if !ok || st.State == "ready" {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("lease still %s after its expiry", st.State)
						}
						time.Sleep(time.Millisecond)
					}
				case cancel:
					r.Cancel("t", "owner went away")
				case lateOpen:
					if _, err := r.OpenInPlace(g, l.Blocks, 1); err == nil {
						t.Fatal("an Open after the lease settled was accepted")
					}
				case abandon:
					r.Abandon("t", g.Epoch, transport.ErrPeerLost)
				case commit:
					if _, err := in.Commit(seq); !errors.Is(err, tc.commitFail) || (err == nil) != (tc.commitFail == nil) {
						t.Fatalf("commit = %v, want %v", err, tc.commitFail)
					}
				}
			}
			if fence.seal(l.Blocks[0], l.FenceKey) {
				t.Error("a seal after the lease settled succeeded")
			}
			ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
			defer stop()
			blocks, err := r.Ready(ctx, "t")
			if tc.wantReady {
				if err != nil || len(blocks) != len(l.Blocks) {
					t.Fatalf("Ready = %v, %v; want the lease's %d blocks", blocks, err, len(l.Blocks))
				}
				for _, b := range blocks {
					if fence.armedWith(b) != 0 {
						t.Errorf("ready block %d still open to writers", b)
					}
				}
				alloc.Claim(blocks)
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Ready = %v, %v; want %v", blocks, err, tc.wantErr)
			}
			if !alloc.WaitFree(5 * time.Second) {
				t.Fatalf("blocks of an uncommitted transfer not freed: %+v", alloc.Stats())
			}
			for _, b := range l.Blocks {
				if fence.armedWith(b) != 0 {
					t.Errorf("freed block %d still open to writers", b)
				}
			}
		})
	}
}
