package shm

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestFenceDisarm(t *testing.T) {
	f, err := NewFence(8)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	live, err := f.register(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	dead, err := f.register(deadPID(t))
	if err != nil {
		t.Fatal(err)
	}
	const key = 7
	writing := func(w uint32) uint64 { return key<<32 | uint64(w)<<1 | writingBit }
	tests := []struct {
		name      string
		word      uint64 // before Disarm(key)
		wantWord  uint64
		wantStuck bool
	}{
		{"armed, idle", key << 32, 0, false},
		{"armed for another lease", 9 << 32, 9 << 32, false},
		{"unarmed", 0, 0, false},
		{"copy in flight by a live writer", writing(live), writing(live), true},
		{"copy abandoned by an exited writer", writing(dead), 0, false},
		{"writer id nobody registered", writing(live + 100), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.words[3].Store(tc.word)
			stuck := f.Disarm([]int32{3}, key)
			if got := f.words[3].Load(); got != tc.wantWord {
				t.Errorf("word = %#x, want %#x", got, tc.wantWord)
			}
			if (len(stuck) == 1) != tc.wantStuck {
				t.Errorf("stuck = %v, want stuck %v", stuck, tc.wantStuck)
			}
		})
	}
}

func TestFenceWriterProtocol(t *testing.T) {
	f, err := NewFence(4)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := f.register(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := f.register(os.Getpid()); again != w {
		t.Errorf("second registration of one process got writer %d, want %d", again, w)
	}
	if err := acquire(f.words, 1, 5, w); !errors.Is(err, transport.ErrStaleEpoch) {
		t.Fatalf("acquire of an unarmed block = %v, want ErrStaleEpoch", err)
	}
	f.Arm([]int32{1}, 5)
	if err := acquire(f.words, 1, 6, w); !errors.Is(err, transport.ErrStaleEpoch) {
		t.Fatalf("acquire with another lease's key = %v, want ErrStaleEpoch", err)
	}
	if err := acquire(f.words, 1, 5, w); err != nil {
		t.Fatal(err)
	}
	if err := acquire(f.words, 1, 5, w); err == nil {
		t.Fatal("a block being written was acquired twice")
	}
	if err := release(f.words, 1, 5, w); err != nil {
		t.Fatal(err)
	}
	if stuck := f.Disarm([]int32{1}, 5); len(stuck) != 0 {
		t.Fatalf("stuck %v after the write ended", stuck)
	}
	if err := acquire(f.words, 1, 5, w); !errors.Is(err, transport.ErrStaleEpoch) {
		t.Fatalf("acquire after disarm = %v, want ErrStaleEpoch", err)
	}
}

// A transfer whose lease ended must not write a byte more, even into
// blocks that a newer transfer now holds.
func TestSHM_StaleWriterRefused(t *testing.T) {
	n := newNodeWith(t, testConfig(t), true)
	c := n.dial(t)
	ctx := context.Background()
	src := source(t)
	var rel releases
	stale, _ := push(t, n, c, src, "old", 6, 2048, &rel)
	if err := stale.SendLayer(ctx, 0); err != nil {
		t.Fatal(err)
	}
	n.recv.Cancel("old", "placement moved the request")
	if !n.waitFreed() {
		t.Fatalf("cancelled transfer's blocks not freed: %+v", n.alloc.Stats())
	}
	// The freed blocks go to a new transfer, zeroed by its owner.
	g := transporttest.Grant(t, "new", 1, "decode-1", n.clock.Now())
	lease, err := c.Reserve(ctx, g, 6)
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, transporttest.Spec().BlockBytes())
	for l := range transporttest.Spec().Layers {
		for _, b := range lease.Blocks {
			if err := n.mem.WriteBlock(l, int(b), zero); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sendRest(stale, 1); !errors.Is(err, transport.ErrCancelled) {
		t.Fatalf("stale transfer's write = %v, want ErrCancelled", err)
	}
	rel.check(t, transport.ErrCancelled)
	got := make([]byte, len(zero))
	for l := range transporttest.Spec().Layers {
		for _, b := range lease.Blocks {
			if err := n.mem.ReadBlock(l, int(b), got); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(zero) {
				t.Fatalf("stale write landed in layer %d block %d of the new transfer", l, b)
			}
		}
	}
	n.recv.Cancel("new", "test over")
}

// A writer stalled inside a block keeps it out of the pool until it lets
// go; then the reaper returns it.
func TestSHM_StalledWriterQuarantine(t *testing.T) {
	n := newNodeWith(t, testConfig(t), true)
	c := n.dial(t)
	ctx := context.Background()
	g := transporttest.Grant(t, "q", 1, "decode-1", n.clock.Now())
	lease, err := c.Reserve(ctx, g, 4)
	if err != nil {
		t.Fatal(err)
	}
	held := lease.Blocks[2]
	if err := acquire(c.rem.fence, held, lease.FenceKey, c.rem.writer); err != nil {
		t.Fatal(err)
	}
	n.recv.Cancel("q", "owner went away")
	if q := n.recv.Quarantined(); q != 1 {
		t.Fatalf("%d blocks quarantined, want 1", q)
	}
	if inUse := n.alloc.InUse(); len(inUse) != 1 || inUse[0] != held {
		t.Fatalf("blocks in use %v, want only the held block %d", inUse, held)
	}
	if err := release(c.rem.fence, held, lease.FenceKey, c.rem.writer); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.recv.Quarantined() > 0 && time.Now().Before(deadline) {
		n.clock.Advance(time.Second) // past the receiver's quarantine retry
		time.Sleep(2 * time.Millisecond)
	}
	if !n.waitFreed() || n.recv.Quarantined() != 0 {
		t.Fatalf("released block not returned: quarantined %d, allocator %+v", n.recv.Quarantined(), n.alloc.Stats())
	}
}

func TestMapRemoteRejects(t *testing.T) {
	spec := transporttest.Spec()
	mem, err := NewMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	fence, err := NewFence(spec.Blocks)
	if err != nil {
		t.Fatal(err)
	}
	defer fence.Close()
	fd, offsets, _ := mem.MemFD()
	size := uint64(spec.Layers * spec.Blocks * spec.BlockBytes())
	good := regionsMsg{fileBytes: size, fenceBlocks: uint32(spec.Blocks), writer: 1}
	for _, off := range offsets {
		good.offsets = append(good.offsets, uint64(off))
	}
	r, err := mapRemote(spec, good, fd, fence.fd)
	if err != nil {
		t.Fatalf("valid regions: %v", err)
	}
	r.drop()
	tests := []struct {
		name   string
		mutate func(m *regionsMsg)
		swap   bool // pass the fence as the KV file and back
	}{
		{"too few layers", func(m *regionsMsg) { m.offsets = m.offsets[:1] }, false},
		{"layer beyond the file", func(m *regionsMsg) { m.offsets[3] = size - 1 }, false},
		{"offset overflow", func(m *regionsMsg) { m.offsets[0] = 1<<64 - 1 }, false},
		{"file size lies", func(m *regionsMsg) { m.fileBytes = size * 2 }, false},
		{"fence of another size", func(m *regionsMsg) { m.fenceBlocks++ }, false},
		{"no writer id", func(m *regionsMsg) { m.writer = 0 }, false},
		{"files swapped", func(m *regionsMsg) {}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			m.offsets = append([]uint64(nil), good.offsets...)
			tc.mutate(&m)
			kvFD, fenceFD := fd, fence.fd
			if tc.swap {
				kvFD, fenceFD = fenceFD, kvFD
			}
			if r, err := mapRemote(spec, m, kvFD, fenceFD); !errors.Is(err, transport.ErrProtocol) {
				if r != nil {
					r.drop()
				}
				t.Fatalf("mapRemote = %v, want ErrProtocol", err)
			}
		})
	}
}

// A sender that dies between its seal and its commit frame has committed:
// the receiver finds the seal when the stream ends and hands the blocks,
// with every byte written, to its owner.
func TestSHM_SealedTransferSurvivesItsSender(t *testing.T) {
	n := newNodeWith(t, testConfig(t), true)
	c := n.dial(t)
	ctx := context.Background()
	g := transporttest.Grant(t, "sealed", 1, "decode-1", n.clock.Now())
	lease, err := c.Reserve(ctx, g, 4)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.OpenStream(ctx, g, lease.Blocks)
	if err != nil {
		t.Fatal(err)
	}
	s := ts.(*stream)
	if !s.InPlace() {
		t.Fatal("stream to a receiver with a fence does not write in place")
	}
	src := source(t)
	spec := transporttest.Spec()
	bb := spec.BlockBytes()
	pairs := make([]transport.BlockPair, len(lease.Blocks))
	for layer := range spec.Layers {
		region, _ := src.Region(layer)
		var segs [][]byte
		for i, dst := range lease.Blocks {
			pairs[i] = transport.BlockPair{Src: int32(i), Dst: dst}
			segs = append(segs, region[i*bb:(i+1)*bb])
		}
		if err := s.SendChunk(ctx, layer, 0, segs, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.SendLayerEnd(ctx, layer); err != nil {
			t.Fatal(err)
		}
	}
	if err := seal(s.rem.seals, s.lead, s.key); err != nil {
		t.Fatal(err)
	}
	s.Close(errors.New("sender died before its commit frame")) // hangs up, frame unsent

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	blocks, err := n.recv.Ready(ctx, "sealed")
	if err != nil {
		t.Fatalf("sealed transfer whose stream broke: Ready = %v", err)
	}
	if err := transporttest.SameBlocks(src, n.mem, pairs); err != nil {
		t.Error(err)
	}
	n.alloc.Claim(blocks)
}

// A pipe goes back into service only if its receiver neither wrote to it
// nor hung up since its last push: after a sealed commit nothing is read,
// so this is how a failure the receiver reported late is noticed.
func TestPipeIdle(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer func(peer *net.UnixConn)
		want bool
	}{
		{"quiet", func(*net.UnixConn) {}, true},
		{"peer wrote", func(p *net.UnixConn) { p.Write([]byte{1}) }, false},
		{"peer hung up", func(p *net.UnixConn) { p.Close() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			conns := make([]*net.UnixConn, 2)
			for i, fd := range fds {
				f := os.NewFile(uintptr(fd), "pipe")
				c, err := net.FileConn(f)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				conns[i] = c.(*net.UnixConn)
				defer conns[i].Close()
			}
			p := &pipe{uc: conns[0], r: newReader(conns[0], 0)}
			tc.peer(conns[1])
			time.Sleep(10 * time.Millisecond) // let a write or hang-up land
			if got := p.idle(); got != tc.want {
				t.Fatalf("idle = %v, want %v", got, tc.want)
			}
		})
	}
}

// A sender that closes its Conn while one of its in-place pushes still holds
// its Open back keeps that reservation: the server abandons the unopened
// reservations of a closed connection only once the sender process exited.
func TestSHM_ConnClosedBeforeTheOpen(t *testing.T) {
	n := newNodeWith(t, testConfig(t), true)
	c := n.dial(t)
	src := source(t)
	var rel releases
	out, pairs := push(t, n, c, src, "live", 4, 1<<20, &rel)
	if st, ok := n.recv.Stat("live"); !ok || st.State != "reserved" {
		t.Fatalf("transfer %+v (live %v) before the first write, want reserved", st, ok)
	}
	c.Close()
	time.Sleep(senderExitWait + 500*time.Millisecond) // past the server's wait for an exit
	if err := sendRest(out, 0); err != nil {
		t.Fatalf("push after its Conn closed: %v", err)
	}
	rel.check(t, nil)
	blocks, err := n.recv.Ready(context.Background(), "live")
	if err != nil {
		t.Fatal(err)
	}
	if err := transporttest.SameBlocks(src, n.mem, pairs); err != nil {
		t.Error(err)
	}
	n.alloc.Claim(blocks)
}
