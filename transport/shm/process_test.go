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
// path it names.
const childEnv = "TANDEM_SHM_TEST_SENDER"

// runChildSender reserves, pushes layer 0 of a transfer, reports "sent" and
// then waits to be killed mid-transfer.
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
	if err := out.SendLayer(ctx, 0); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("sent")
	time.Sleep(time.Minute) // killed before this ends
	return 2
}

// A sender process killed with SIGKILL mid-transfer: the kernel closes its
// socket, and the receiver must free the transfer's blocks at once, with
// no lease expiry needed (the fake clock never moves).
func TestSHM_SenderProcessKilled(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("in place %v", inPlace), func(t *testing.T) { testSenderProcessKilled(t, inPlace) })
	}
}

func testSenderProcessKilled(t *testing.T, inPlace bool) {
	n := newNodeWith(t, testConfig(t), inPlace)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+n.path)
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
	n.waitStarted(t, "child")
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
