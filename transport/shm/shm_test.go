package shm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
	"github.com/tandemserve/tandem/transport/wire"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChildSender(path))
	}
	goleak.VerifyTestMain(m)
}

const ttl = 5 * time.Second

type node struct {
	t     *testing.T
	clock *transporttest.FakeClock
	alloc *transporttest.Allocator
	recv  *transport.Receiver
	mem   *transport.HostMemory
	fence *Fence // nil unless in place
	srv   *Server
	path  string
	wg    sync.WaitGroup
	once  sync.Once
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.Slots, cfg.SlotBytes = 3, 8<<10
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// newNode starts a receiver whose memory is private: senders stage.
func newNode(t *testing.T, cfg Config) *node { return newNodeWith(t, cfg, false) }

// newNodeWith starts a receiver; inPlace gives it memfd memory and a fence,
// so senders write leased blocks in place.
func newNodeWith(t *testing.T, cfg Config, inPlace bool) *node {
	t.Helper()
	spec := transporttest.Spec()
	n := &node{t: t, clock: transporttest.NewFakeClock(), alloc: transporttest.NewAllocator(spec.Blocks)}
	rc := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	rc.Secret, rc.Clock, rc.LeaseTTL, rc.Logger = transporttest.Secret, n.clock, ttl, cfg.Logger
	var mem transport.Memory
	var err error
	if inPlace {
		shared, err := NewMemory(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shared.Close() })
		if n.fence, err = NewFence(spec.Blocks); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.fence.Close() })
		n.mem, mem, rc.Fence = shared.HostMemory, shared, n.fence
	} else {
		if n.mem, err = transport.NewHostMemory(spec); err != nil {
			t.Fatal(err)
		}
		mem = n.mem
	}
	if n.recv, err = transport.NewReceiver(rc, mem, n.alloc); err != nil {
		t.Fatal(err)
	}
	if n.srv, err = NewServer(cfg, n.recv); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "s")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	n.path = filepath.Join(dir, "kv.sock")
	lis, err := Listen(n.path)
	if err != nil {
		t.Fatal(err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		n.kill()
		n.recv.Close()
		if st := n.alloc.Stats(); len(st.Errors) > 0 || st.InUse != 0 {
			t.Errorf("receiver blocks leaked or double freed: %+v", st)
		}
	})
	return n
}

func (n *node) kill() {
	n.once.Do(func() {
		n.srv.Close()
		n.wg.Wait()
	})
}

func (n *node) dial(t *testing.T) *Conn { return n.dialWith(t, testConfig(t)) }

func (n *node) dialWith(t *testing.T, cfg Config) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), cfg, n.path, transporttest.Descriptor("prefill-1", transporttest.Spec()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (n *node) waitFreed() bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n.alloc.Stats().InUse == 0 && n.recv.Active() == 0 {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

func (n *node) waitData(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := n.recv.Stat(id); ok && st.Bytes > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no data of %q arrived", id)
}

type releases struct {
	mu   sync.Mutex
	errs []error
}

func (r *releases) release(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *releases) check(t *testing.T, want error) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) != 1 || (want == nil) != (r.errs[0] == nil) || (want != nil && !errors.Is(r.errs[0], want)) {
		t.Fatalf("Release calls %v, want exactly one with %v", r.errs, want)
	}
}

func source(t *testing.T) *transport.HostMemory {
	m, err := transport.NewHostMemory(transporttest.Spec())
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Fill(m, 5)
	return m
}

func push(t *testing.T, n *node, c *Conn, src transport.Memory, id string, blocks, chunk int, rel *releases) (*transport.Outbound, []transport.BlockPair) {
	t.Helper()
	return pushStride(t, n, c, src, id, blocks, chunk, 2, rel)
}

// pushStride pushes source blocks 0, stride, 2*stride, ...: with stride 1
// adjacent source blocks go to the lease's blocks in ascending order, so
// adjacent ones line up and an in-place sender copies them as one run.
func pushStride(t *testing.T, n *node, c *Conn, src transport.Memory, id string, blocks, chunk, stride int, rel *releases) (*transport.Outbound, []transport.BlockPair) {
	t.Helper()
	ctx := context.Background()
	g := transporttest.Grant(t, id, 1, "decode-1", n.clock.Now())
	lease, err := c.Reserve(ctx, g, blocks)
	if err != nil {
		t.Fatal(err)
	}
	dst := lease.Blocks
	if stride == 1 {
		dst = slices.Sorted(slices.Values(dst))
	}
	pairs := make([]transport.BlockPair, blocks)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: int32(stride * i), Dst: dst[i]}
	}
	out, err := transport.Push(ctx, c, src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: chunk, Release: rel.release})
	if err != nil {
		t.Fatal(err)
	}
	return out, pairs
}

func sendRest(out *transport.Outbound, from int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for l := from; l < transporttest.Spec().Layers; l++ {
		if err := out.SendLayer(ctx, l); err != nil {
			return err
		}
	}
	_, err := out.Commit(ctx)
	return err
}

func TestSHM_RoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		blocks    int
		chunk     int
		stride    int // between source blocks
		inPlace   bool
		stageOnly bool
		streamed  bool // in place: written in runs, past the cache
	}{
		{"chunks smaller than slots", 12, 3000, 2, false, false, false},
		{"chunks clamped to the slot size", 20, 1 << 20, 2, false, false, false},
		{"in place, block by block", 12, 3000, 1, true, false, false},
		{"in place streamed, scattered source blocks", 12, 3000, 2, true, false, true},
		{"in place streamed, adjacent blocks in runs", 20, 1 << 20, 1, true, false, true},
		{"in place offered, sender stages", 12, 3000, 2, true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNodeWith(t, testConfig(t), tc.inPlace)
			cfg := testConfig(t)
			cfg.StageOnly = tc.stageOnly
			if tc.streamed {
				cfg.StreamBytes = 1
			}
			c := n.dialWith(t, cfg)
			if got, want := c.rem != nil, tc.inPlace && !tc.stageOnly; got != want {
				t.Fatalf("sender mapped the receiver's memory: %v, want %v", got, want)
			}
			src := source(t)
			// Several transfers in turn: later ones reuse the first's pipe.
			for _, id := range []string{"rt1", "rt2", "rt3"} {
				var rel releases
				out, pairs := pushStride(t, n, c, src, id, tc.blocks, tc.chunk, tc.stride, &rel)
				if err := sendRest(out, 0); err != nil {
					t.Fatal(err)
				}
				rel.check(t, nil)
				blocks, err := n.recv.Ready(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if err := transporttest.SameBlocks(src, n.mem, pairs); err != nil {
					t.Error(err)
				}
				n.alloc.Claim(blocks)
				transporttest.Fill(src, uint64(len(id))+uint64(id[2])) // new bytes for the next round
			}
			c.idleMu.Lock()
			idle := len(c.idle)
			c.idleMu.Unlock()
			if idle != 1 {
				t.Errorf("%d idle pipes after sequential transfers, want 1 reused pipe", idle)
			}
		})
	}
}

func TestSHM_Failures(t *testing.T) {
	tests := []struct {
		name string
		act  func(t *testing.T, n *node, c *Conn, out *transport.Outbound) error
		want error
	}{
		{"receiver killed mid-transfer", func(t *testing.T, n *node, _ *Conn, out *transport.Outbound) error {
			outlastHoldBack()
			if err := out.SendLayer(context.Background(), 0); err != nil {
				return err
			}
			n.waitStarted(t, "f")
			n.kill()
			return sendRest(out, 1)
		}, transport.ErrPeerLost},
		{"late chunk after lease expiry", func(t *testing.T, n *node, _ *Conn, out *transport.Outbound) error {
			// Every frame renews the lease, so the clock moves only once
			// the receiver has seen all that was sent: staged, the whole
			// first layer; in place, the open and the first layer end
			// (written once the sender's hold-back has passed).
			outlastHoldBack()
			if err := out.SendLayer(context.Background(), 0); err != nil {
				return err
			}
			if n.fence == nil {
				n.waitBytes(t, "f", uint64(6*transporttest.Spec().BlockBytes()))
			} else {
				n.waitStarted(t, "f")
			}
			from := 1
			n.clock.Advance(ttl + time.Millisecond)
			if !n.waitFreed() {
				t.Fatal("expired lease not freed")
			}
			return sendRest(out, from)
		}, transport.ErrLeaseExpired},
		{"sender deadline", func(t *testing.T, n *node, _ *Conn, out *transport.Outbound) error {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			return out.SendLayer(ctx, 0)
		}, transport.ErrTimeout},
		{"owner cancels", func(t *testing.T, n *node, _ *Conn, out *transport.Outbound) error {
			if err := out.SendLayer(context.Background(), 0); err != nil {
				return err
			}
			n.recv.Cancel("f", "client went away")
			return sendRest(out, 1)
		}, transport.ErrCancelled},
	}
	for _, tc := range tests {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/in place %v", tc.name, inPlace), func(t *testing.T) {
				n := newNodeWith(t, testConfig(t), inPlace)
				c := n.dial(t)
				var rel releases
				out, _ := push(t, n, c, source(t), "f", 6, 2048, &rel)
				if err := tc.act(t, n, c, out); !errors.Is(err, tc.want) {
					t.Fatalf("sender error = %v, want %v", err, tc.want)
				}
				rel.check(t, tc.want)
				if !n.waitFreed() {
					t.Fatalf("receiver blocks not freed: %+v", n.alloc.Stats())
				}
				if st := n.alloc.Stats(); st.Frees != 1 {
					t.Errorf("blocks freed %d times, want once", st.Frees)
				}
			})
		}
	}
}

// rawStream opens a push stream by hand, to send frames a correct sender
// never would.
func rawStream(t *testing.T, n *node, id string, blocks int) (*net.UnixConn, *reader, *segment, transport.Grant, []int32) {
	t.Helper()
	c := n.dial(t)
	g := transporttest.Grant(t, id, 1, "decode-1", n.clock.Now())
	lease, err := c.Reserve(context.Background(), g, blocks)
	if err != nil {
		t.Fatal(err)
	}
	uc, r, _, err := c.connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seg, err := createSegment(2, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close(); r.close(); seg.close() })
	start := &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_StartPush{StartPush: &transportv1.StartPush{Slots: 2, SlotBytes: 8 << 10}}}
	if _, err := writeMsg(uc, nil, start, seg.fd); err != nil {
		t.Fatal(err)
	}
	return uc, r, seg, g, lease.Blocks
}

func frame(seq uint64, f proto.Message) *transportv1.ShmRequest {
	fr := &transportv1.Frame{Seq: seq}
	switch k := f.(type) {
	case *transportv1.Open:
		fr.Kind = &transportv1.Frame_Open{Open: k}
	case *transportv1.ShmChunk:
		fr.Kind = &transportv1.Frame_ShmChunk{ShmChunk: k}
	}
	return &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_Frame{Frame: fr}}
}

func TestSHM_RawFramesRefused(t *testing.T) {
	tests := []struct {
		name   string
		chunk  func(seg *segment) *transportv1.ShmChunk
		reason string
	}{
		{"checksum mismatch", func(seg *segment) *transportv1.ShmChunk {
			copy(seg.mem, "payload")
			return &transportv1.ShmChunk{Slot: 0, Length: 7, Crc32C: transport.Checksum([]byte("payloaD"))}
		}, "CHECKSUM"},
		{"slot out of range", func(seg *segment) *transportv1.ShmChunk {
			return &transportv1.ShmChunk{Slot: 9, Length: 7}
		}, "PROTOCOL"},
		{"length past slot", func(seg *segment) *transportv1.ShmChunk {
			return &transportv1.ShmChunk{Slot: 1, Length: 8<<10 + 1}
		}, "PROTOCOL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, testConfig(t))
			uc, r, seg, g, blocks := rawStream(t, n, "raw", 2)
			if _, err := writeMsg(uc, nil, frame(1, &transportv1.Open{Grant: wire.Grant(g), DstBlocks: blocks})); err != nil {
				t.Fatal(err)
			}
			if _, err := writeMsg(uc, nil, frame(2, tc.chunk(seg))); err != nil {
				t.Fatal(err)
			}
			resp := new(transportv1.ShmResponse)
			if err := r.read(resp); err != nil {
				t.Fatal(err)
			}
			if got := resp.GetFailure().GetReason(); got != tc.reason {
				t.Fatalf("reply %v, want failure %s", resp, tc.reason)
			}
			if !n.waitFreed() {
				t.Fatalf("blocks not freed: %+v", n.alloc.Stats())
			}
		})
	}
}

func TestSHM_RefusesUnsealedSegment(t *testing.T) {
	n := newNode(t, testConfig(t))
	c := n.dial(t)
	uc, r, _, err := c.connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { uc.Close(); r.close() }()
	f, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(16 << 10); err != nil {
		t.Fatal(err)
	}
	start := &transportv1.ShmRequest{Kind: &transportv1.ShmRequest_StartPush{StartPush: &transportv1.StartPush{Slots: 2, SlotBytes: 8 << 10}}}
	if _, err := writeMsg(uc, nil, start, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	resp := new(transportv1.ShmResponse)
	if err := r.read(resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetFailure().GetReason() != "PROTOCOL" {
		t.Fatalf("unsealed file accepted: %v", resp)
	}
}

func TestSHM_PeerAuthentication(t *testing.T) {
	cfg := testConfig(t)
	cfg.AllowedUIDs = []int{os.Getuid() + 1} // not us
	n := newNode(t, cfg)
	_, err := Dial(context.Background(), testConfig(t), n.path, transporttest.Descriptor("prefill-1", transporttest.Spec()))
	if !errors.Is(err, transport.ErrUnauthenticated) {
		t.Fatalf("Dial from a disallowed uid = %v, want ErrUnauthenticated", err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(open, "kv.sock")); !errors.Is(err, transport.ErrInvalid) {
		t.Fatalf("Listen in a shared directory = %v, want refusal", err)
	}
}

// waitBytes waits until n payload bytes of transfer id have landed, so a
// later clock advance cannot race their lease renewals.
// waitStarted waits until the receiver has seen the transfer's stream
// open (in place, payload bytes are counted only at layer ends).
// outlastHoldBack waits long enough that an in-place stream writes its
// next layer end (with the Open it holds back) at once.
func outlastHoldBack() { time.Sleep(2 * layerFlushEvery) }

func (n *node) waitStarted(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := n.recv.Stat(id); ok && st.State == "streaming" {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("stream of %q did not open", id)
}

func (n *node) waitBytes(t *testing.T, id string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := n.recv.Stat(id); ok && st.Bytes >= want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%d bytes of %q did not arrive", want, id)
}
