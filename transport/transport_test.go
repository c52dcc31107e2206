package transport_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/inproc"
	"github.com/tandemserve/tandem/transport/transporttest"
)

func TestPush_RoundTrip(t *testing.T) {
	bb := transporttest.Spec().BlockBytes()
	tests := []struct {
		name    string
		blocks  int
		chunk   int
		reverse bool // scatter source blocks so no two are adjacent in order
	}{
		{"chunk smaller than block", 3, 300, false},
		{"chunk equals block", 4, bb, false},
		{"chunk spans blocks", 9, 3*bb + 17, false},
		{"scattered sources", 7, 2 * bb, true},
		{"default chunk", 16, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, nil)
			ctx := context.Background()
			g := rg.grant("t1", 1)
			lease, err := rg.conn.Reserve(ctx, g, tc.blocks)
			if err != nil {
				t.Fatal(err)
			}
			pairs := make([]transport.BlockPair, tc.blocks)
			for i := range pairs {
				src := int32(i)
				if tc.reverse {
					src = int32(2 * (tc.blocks - i))
				}
				pairs[i] = transport.BlockPair{Src: src, Dst: lease.Blocks[i]}
			}
			var rel releases
			out, err := transport.Push(ctx, rg.conn, rg.src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: tc.chunk, Release: rel.release})
			if err != nil {
				t.Fatal(err)
			}
			committed, err := sendAll(ctx, out, rg.spec.Layers)
			if err != nil {
				t.Fatal(err)
			}
			got, err := rg.recv.Ready(ctx, "t1")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(lease.Blocks, got); diff != "" {
				t.Errorf("Ready blocks (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(lease.Blocks, committed); diff != "" {
				t.Errorf("committed blocks (-want +got):\n%s", diff)
			}
			if err := transporttest.SameBlocks(rg.src, rg.dst, pairs); err != nil {
				t.Error(err)
			}
			if err := rel.once(t); err != nil {
				t.Errorf("Release(%v), want nil", err)
			}
			if st := rg.alloc.Stats(); st.Frees != 0 || st.InUse != tc.blocks {
				t.Errorf("claimed blocks must stay allocated to the owner: %+v", st)
			}
			rg.alloc.Claim(got)
			if rg.recv.Active() != 0 {
				t.Errorf("receiver still tracks %d transfers", rg.recv.Active())
			}
		})
	}
}

// deviceMemory hides Region so both sides take the ReadBlock/WriteBlock path.
type deviceMemory struct{ m *transport.HostMemory }

func (d deviceMemory) Spec() kernels.KVSpec                { return d.m.Spec() }
func (d deviceMemory) Region(int) ([]byte, bool)           { return nil, false }
func (d deviceMemory) ReadBlock(l, b int, p []byte) error  { return d.m.ReadBlock(l, b, p) }
func (d deviceMemory) WriteBlock(l, b int, p []byte) error { return d.m.WriteBlock(l, b, p) }

func TestPush_DeviceMemory(t *testing.T) {
	spec := transporttest.Spec()
	src, _ := transport.NewHostMemory(spec)
	dst, _ := transport.NewHostMemory(spec)
	transporttest.Fill(src, 7)
	alloc := transporttest.NewAllocator(spec.Blocks)
	cfg := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	cfg.Secret = transporttest.Secret
	recv, err := transport.NewReceiver(cfg, deviceMemory{dst}, alloc)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	conn, err := inproc.Dial(transporttest.Descriptor("prefill-1", spec), recv, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	g := transporttest.Grant(t, "dev", 1, "decode-1", time.Now())
	lease, err := conn.Reserve(ctx, g, 5)
	if err != nil {
		t.Fatal(err)
	}
	pairs := []transport.BlockPair{{Src: 9, Dst: lease.Blocks[0]}, {Src: 3, Dst: lease.Blocks[1]}, {Src: 4, Dst: lease.Blocks[2]}}
	out, err := transport.Push(ctx, conn, deviceMemory{src}, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 700})
	if err != nil {
		t.Fatal(err)
	}
	// Layers in reverse order: layer-wise streaming does not need order.
	for l := spec.Layers - 1; l >= 0; l-- {
		if err := out.SendLayer(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := recv.Ready(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := transporttest.SameBlocks(src, dst, pairs); err != nil {
		t.Error(err)
	}
}

func TestHandshake_NamesMismatch(t *testing.T) {
	base := transporttest.Descriptor("prefill-1", transporttest.Spec())
	tests := []struct {
		name   string
		mutate func(*transport.Descriptor)
		want   string
	}{
		{"model", func(d *transport.Descriptor) { d.ModelID = "other" }, "model id"},
		{"dtype", func(d *transport.Descriptor) { d.Spec.DType = kernels.KVInt8 }, "dtype"},
		{"layers", func(d *transport.Descriptor) { d.Spec.Layers = 5 }, "layer count 5 != 4"},
		{"kv heads", func(d *transport.Descriptor) { d.Spec.KVHeads = 1 }, "kv heads"},
		{"head dim", func(d *transport.Descriptor) { d.Spec.HeadDim = 64 }, "head dim"},
		{"block size", func(d *transport.Descriptor) { d.Spec.BlockSize = 16 }, "block size"},
		{"layout", func(d *transport.Descriptor) { d.Layout = "v-then-k" }, "layout"},
	}
	rg := newRig(t, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := base
			tc.mutate(&d)
			_, err := rg.recv.Handshake(d)
			if !errors.Is(err, transport.ErrIncompatible) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Handshake = %v, want ErrIncompatible naming %q", err, tc.want)
			}
		})
	}
	d := base
	d.Spec.Blocks = 7 // pool sizes may differ
	if _, err := rg.recv.Handshake(d); err != nil {
		t.Errorf("different pool size must be compatible: %v", err)
	}
}

func TestReserve_Refusals(t *testing.T) {
	rg := newRig(t, nil)
	ctx := context.Background()
	if _, err := rg.conn.Reserve(ctx, rg.grant("live", 5), 2); err != nil {
		t.Fatal(err)
	}
	tampered := rg.grant("x", 1)
	tampered.Epoch = 2
	otherDest := transporttest.Grant(t, "y", 1, "decode-2", rg.clock.Now())
	expired, _ := transport.IssueGrant(transporttest.Secret, "z", 1, "decode-1", rg.clock.Now().Add(-time.Second))
	tests := []struct {
		name string
		g    transport.Grant
		n    int
		want error
	}{
		{"tampered epoch", tampered, 1, transport.ErrUnauthenticated},
		{"other destination", otherDest, 1, transport.ErrUnauthenticated},
		{"expired grant", expired, 1, transport.ErrTokenExpired},
		{"no blocks", rg.grant("a", 1), 0, transport.ErrInvalid},
		{"too many blocks", rg.grant("b", 1), rg.spec.Blocks + 1, transport.ErrInvalid},
		{"same epoch twice", rg.grant("live", 5), 1, transport.ErrDuplicate},
		{"older epoch", rg.grant("live", 4), 1, transport.ErrStaleEpoch},
		{"pool exhausted", rg.grant("c", 1), rg.spec.Blocks - 1, transport.ErrExhausted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := rg.conn.Reserve(ctx, tc.g, tc.n); !errors.Is(err, tc.want) {
				t.Fatalf("Reserve = %v, want %v", err, tc.want)
			}
		})
	}
	if st := rg.alloc.Stats(); st.InUse != 2 {
		t.Errorf("refused reservations must not hold blocks: %+v", st)
	}
	// A newer epoch supersedes the live lease and frees its blocks.
	if _, err := rg.conn.Reserve(ctx, rg.grant("live", 6), 3); err != nil {
		t.Fatal(err)
	}
	if st := rg.alloc.Stats(); st.InUse != 3 || st.Frees != 1 {
		t.Errorf("after supersede: %+v, want 3 in use and 1 free", st)
	}
}

func TestGrant_Validation(t *testing.T) {
	if _, err := transport.IssueGrant([]byte("short"), "a", 1, "d", time.Now()); !errors.Is(err, transport.ErrInvalid) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := transport.IssueGrant(transporttest.Secret, strings.Repeat("x", 200), 1, "d", time.Now()); !errors.Is(err, transport.ErrInvalid) {
		t.Errorf("long id: %v", err)
	}
	a := transporttest.Grant(t, "ab", 1, "c", time.Unix(0, 0))
	b := transporttest.Grant(t, "a", 1, "bc", time.Unix(0, 0))
	if slices.Equal(a.Token, b.Token) {
		t.Error("(ab, c) and (a, bc) must not share a token")
	}
}

func TestErrorReasons_RoundTrip(t *testing.T) {
	for _, err := range []error{transport.ErrChecksum, transport.ErrStaleEpoch, transport.ErrLeaseExpired, transport.ErrPeerLost} {
		back := transport.ErrorFromReason(transport.Reason(err), "x")
		if !errors.Is(back, err) {
			t.Errorf("%v did not survive the wire: %v", err, back)
		}
	}
	if err := transport.ErrorFromReason("NOPE", "x"); !errors.Is(err, transport.ErrProtocol) {
		t.Errorf("unknown reason = %v, want ErrProtocol", err)
	}
}
