package transport_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/inproc"
)

// Every failure must end the transfer with a typed error on the sender, run
// the sender's Release once with that error, free the receiver's blocks and
// make Ready report the failure.
func TestPush_Failures(t *testing.T) {
	// Frames of a 4-block transfer with 1 KiB chunks: 1 Open, then per layer
	// 4 chunks and a LayerEnd; seq 8 is layer 0's third chunk.
	tests := []struct {
		name      string
		intercept inproc.Interceptor
		act       func(rg *rig, out *transport.Outbound) error
		want      error
	}{
		{
			name:      "checksum mismatch",
			intercept: faultAt(8, inproc.Corrupt),
			want:      transport.ErrChecksum,
		},
		{
			name:      "duplicate chunk",
			intercept: faultAt(3, inproc.Duplicate),
			want:      transport.ErrDuplicateChunk,
		},
		{
			name:      "duplicate layer end",
			intercept: faultAt(6, inproc.Duplicate),
			want:      transport.ErrDuplicateChunk,
		},
		{
			name:      "connection cut mid-transfer",
			intercept: faultAt(9, inproc.Cut),
			want:      transport.ErrPeerLost,
		},
		{
			name: "peer killed between layers",
			act: func(rg *rig, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				rg.conn.Kill()
				return out.SendLayer(context.Background(), 1)
			},
			want: transport.ErrPeerLost,
		},
		{
			name: "lease expires while the sender stalls",
			act: func(rg *rig, out *transport.Outbound) error {
				if err := out.SendLayer(context.Background(), 0); err != nil {
					return err
				}
				rg.clock.Advance(ttl + time.Millisecond)
				if !rg.alloc.WaitFree(5 * time.Second) {
					return errors.New("lease was not reaped")
				}
				return out.SendLayer(context.Background(), 1) // a late write
			},
			want: transport.ErrLeaseExpired,
		},
		{
			name: "receiver owner cancels",
			act: func(rg *rig, out *transport.Outbound) error {
				rg.recv.Cancel("t", "client went away")
				return out.SendLayer(context.Background(), 0)
			},
			want: transport.ErrCancelled,
		},
		{
			name: "sender deadline passes",
			act: func(rg *rig, out *transport.Outbound) error {
				ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				defer cancel()
				return out.SendLayer(ctx, 0)
			},
			want: transport.ErrTimeout,
		},
		{
			name: "sender aborts",
			act: func(rg *rig, out *transport.Outbound) error {
				out.Abort(nil)
				_, err := out.Commit(context.Background())
				return err
			},
			want: transport.ErrCancelled,
		},
		{
			name: "commit before every layer",
			act: func(rg *rig, out *transport.Outbound) error {
				_, err := out.Commit(context.Background())
				return err
			},
			want: transport.ErrInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, tc.intercept)
			var rel releases
			_, out, _, err := rg.start("t", 4, 1024, &rel)
			if err != nil {
				t.Fatal(err)
			}
			act := tc.act
			if act == nil {
				act = func(_ *rig, out *transport.Outbound) error {
					_, err := sendAll(context.Background(), out, rg.spec.Layers)
					return err
				}
			}
			err = act(rg, out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("sender error = %v, want %v", err, tc.want)
			}
			if rerr := rel.once(t); !errors.Is(rerr, tc.want) {
				t.Errorf("Release(%v), want %v", rerr, tc.want)
			}
			if _, err := rg.recv.Ready(context.Background(), "t"); err == nil {
				t.Error("Ready succeeded for a failed transfer")
			}
			if st := rg.alloc.Stats(); st.InUse != 0 || st.Frees != 1 {
				t.Errorf("receiver blocks not freed exactly once: %+v", st)
			}
			if rg.recv.Active() != 0 {
				t.Errorf("receiver still tracks %d transfers", rg.recv.Active())
			}
		})
	}
}

func faultAt(seq uint64, f inproc.Fault) inproc.Interceptor {
	return func(s uint64) inproc.Fault {
		if s == seq {
			return f
		}
		return inproc.Deliver
	}
}

// A stale transfer's late write must never land in blocks that were freed
// and then leased to another transfer.
func TestFencing_LateWriteIntoReusedBlocks(t *testing.T) {
	rg := newRig(t, nil)
	ctx := context.Background()
	var rel releases
	old, out, _, err := rg.start("old", 4, 1024, &rel)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.SendLayer(ctx, 0); err != nil {
		t.Fatal(err)
	}
	rg.clock.Advance(ttl + time.Millisecond) // old's lease expires
	if !rg.alloc.WaitFree(5 * time.Second) {
		t.Fatal("lease was not reaped")
	}
	// The allocator hands the same blocks to a new transfer.
	fresh, err := rg.conn.Reserve(ctx, rg.grant("new", 1), 4)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Blocks[0] != old.Blocks[3] && fresh.Blocks[0] != old.Blocks[0] {
		t.Logf("blocks reused: old %v new %v", old.Blocks, fresh.Blocks)
	}
	region, _ := rg.dst.Region(1)
	before := string(region)
	if err := out.SendLayer(ctx, 1); !errors.Is(err, transport.ErrLeaseExpired) {
		t.Fatalf("late write = %v, want ErrLeaseExpired", err)
	}
	if string(region) != before {
		t.Fatal("a refused write changed receiver memory")
	}
	// Re-reserving the old transfer at its old epoch is refused too.
	if _, err := rg.conn.Reserve(ctx, rg.grant("old", 1), 1); !errors.Is(err, transport.ErrDuplicate) {
		t.Errorf("re-reserve of an ended transfer = %v, want ErrDuplicate", err)
	}
	// Opening a second stream with the old grant finds no live lease.
	g := rg.grant("old", 1)
	if _, err := transport.Push(ctx, rg.conn, rg.src, transport.Plan{Grant: g, Pairs: []transport.BlockPair{{Src: 0, Dst: fresh.Blocks[0]}}}); !errors.Is(err, transport.ErrLeaseExpired) {
		t.Errorf("open of an expired transfer = %v, want ErrLeaseExpired", err)
	}
}

func TestOpen_RefusesForeignBlocks(t *testing.T) {
	rg := newRig(t, nil)
	ctx := context.Background()
	other, err := rg.conn.Reserve(ctx, rg.grant("other", 1), 2)
	if err != nil {
		t.Fatal(err)
	}
	g := rg.grant("mine", 1)
	mine, err := rg.conn.Reserve(ctx, g, 2)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dst  []int32
	}{
		{"block of another lease", []int32{mine.Blocks[0], other.Blocks[0]}},
		{"repeated block", []int32{mine.Blocks[0], mine.Blocks[0]}},
		{"more blocks than leased", []int32{mine.Blocks[0], mine.Blocks[1], 60}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := rg.recv.Open(g, tc.dst, 1); err == nil {
				t.Fatal("Open accepted blocks outside the lease")
			}
		})
	}
	// A bad Open fails the transfer: its blocks are freed, the other stays.
	if st := rg.alloc.Stats(); st.InUse != 2 {
		t.Errorf("after refused opens: %+v, want only the other lease's 2 blocks", st)
	}
}

func TestLease_RenewKeepsAlive(t *testing.T) {
	rg := newRig(t, nil)
	ctx := context.Background()
	if _, err := rg.conn.Reserve(ctx, rg.grant("r", 3), 2); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		rg.clock.Advance(ttl / 2)
		if _, err := rg.recv.Renew("r", 3); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	if _, err := rg.recv.Renew("r", 2); !errors.Is(err, transport.ErrStaleEpoch) {
		t.Errorf("Renew with old epoch = %v, want ErrStaleEpoch", err)
	}
	if st := rg.alloc.Stats(); st.Frees != 0 {
		t.Fatalf("renewed lease was freed: %+v", st)
	}
	rg.clock.Advance(ttl)
	if !rg.alloc.WaitFree(5 * time.Second) {
		t.Fatal("unrenewed lease was not freed")
	}
	if _, err := rg.recv.Renew("r", 3); !errors.Is(err, transport.ErrLeaseExpired) {
		t.Errorf("Renew after expiry = %v, want ErrLeaseExpired", err)
	}
}

// A committed transfer nobody claims must not strand its blocks.
func TestLease_UnclaimedReadyExpires(t *testing.T) {
	rg := newRig(t, nil)
	var rel releases
	_, out, _, err := rg.start("u", 2, 0, &rel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sendAll(context.Background(), out, rg.spec.Layers); err != nil {
		t.Fatal(err)
	}
	rg.clock.Advance(ttl + time.Millisecond)
	if !rg.alloc.WaitFree(5 * time.Second) {
		t.Fatal("unclaimed ready lease was not freed")
	}
	if _, err := rg.recv.Ready(context.Background(), "u"); !errors.Is(err, transport.ErrLeaseExpired) {
		t.Errorf("Ready after expiry = %v, want ErrLeaseExpired", err)
	}
}

func TestReady_WaitsForCommit(t *testing.T) {
	rg := newRig(t, nil)
	var rel releases
	_, out, _, err := rg.start("w", 2, 0, &rel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := rg.recv.Ready(ctx, "w"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ready before commit = %v, want deadline exceeded", err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := rg.recv.Ready(context.Background(), "w")
		got <- err
	}()
	if _, err := sendAll(context.Background(), out, rg.spec.Layers); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Ready after commit: %v", err)
	}
}
