package shm

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// childEnv makes the test binary act as a sender process on the socket
// path it names; childOpenedEnv, set, makes it push a layer once its
// stream's first write goes out at once (an in-place stream holds its Open
// back until then). Unset, the child opens its stream and writes nothing.
const (
	childEnv       = "TANDEM_SHM_TEST_SENDER"
	childOpenedEnv = "TANDEM_SHM_TEST_SENDER_OPENED"
)

// runChildSender reserves, opens a transfer's stream (and pushes its layer
// 0 when asked), reports "sent" and then waits to be killed mid-transfer.
func runChildSender(path string) int {
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	spec := transporttest.Spec()
	c, err := Dial(ctx, cfg, path, transporttest.Descriptor("prefill-child", spec))
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	g, err := transport.IssueGrant(transporttest.Secret, "child", 1, "decode-1", time.Now().Add(time.Hour))
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	lease, err := c.Reserve(ctx, g, 8)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	src, err := transport.NewHostMemory(spec)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	transporttest.Fill(src, 9)
	pairs := make([]transport.BlockPair, len(lease.Blocks))
	for i, b := range lease.Blocks {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: b}
	}
	out, err := transport.Push(ctx, c, src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 4096})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if os.Getenv(childOpenedEnv) != "" {
		outlastHoldBack()
		if err := out.SendLayer(ctx, 0); err != nil {
			fmt.Println("error:", err)
			return 1
		}
	}
	fmt.Println("sent")
	time.Sleep(time.Minute) // killed before this ends
	return 2
}

// A sender process killed with SIGKILL mid-transfer: the kernel closes its
// sockets, and the receiver must free the transfer's blocks at once, with
// no lease expiry needed (the fake clock never moves). An in-place sender
// killed before its stream's first write has only its control connection
// to lose.
func TestSHM_SenderProcessKilled(t *testing.T) {
	for _, tc := range []struct {
		name            string
		inPlace, opened bool
	}{
		{"staged", false, true},
		{"in place, stream opened", true, true},
		{"in place, before the stream's first write", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testSenderProcessKilled(t, tc.inPlace, tc.opened) })
	}
}

func testSenderProcessKilled(t *testing.T, inPlace, opened bool) {
	n := newNodeWith(t, testConfig(t), inPlace)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+n.path)
	if opened {
		cmd.Env = append(cmd.Env, childOpenedEnv+"=1")
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
	}()
	select {
	case l := <-line:
		if l != "sent" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child: %s", l)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child sender did not start")
	}
	if opened {
		n.waitStarted(t, "child")
	} else if st, ok := n.recv.Stat("child"); !ok || st.State != "reserved" {
		t.Fatalf("transfer %+v (live %v) before the sender's first write, want reserved", st, ok)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !n.waitFreed() {
		t.Fatalf("blocks of the killed sender's transfer not freed: %+v", n.alloc.Stats())
	}
	if st := n.alloc.Stats(); st.Frees != 1 || st.Allocs != 1 {
		t.Errorf("allocator %+v, want one allocation freed once", st)
	}
	if _, err := n.recv.Ready(context.Background(), "child"); err == nil {
		t.Error("Ready succeeded for the killed sender's transfer")
	}
}
