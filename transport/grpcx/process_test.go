package grpcx_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// childEnv makes the test binary act as a sender process; its value is a
// JSON childSpec.
const childEnv = "TANDEM_GRPCX_TEST_SENDER"

type childSpec struct {
	Addr string
	TLS  transport.TLSConfig
}

// runChildSender reserves, pushes layer 0 over mutual TLS, reports "sent"
// and waits to be killed mid-transfer.
func runChildSender(raw string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	var cs childSpec
	if err := json.Unmarshal([]byte(raw), &cs); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	cfg := grpcx.DefaultConfig()
	cfg.TLS, cfg.Logger = cs.TLS, slog.New(slog.DiscardHandler)
	spec := transporttest.Spec()
	c, err := grpcx.Dial(ctx, cfg, cs.Addr, transporttest.Descriptor("prefill-child", spec))
	if err != nil {
		return fail(err)
	}
	g, err := transport.IssueGrant(transporttest.Secret, "child", 1, "decode-1", time.Now().Add(time.Hour))
	if err != nil {
		return fail(err)
	}
	lease, err := c.Reserve(ctx, g, 8)
	if err != nil {
		return fail(err)
	}
	src, err := transport.NewHostMemory(spec)
	if err != nil {
		return fail(err)
	}
	pairs := make([]transport.BlockPair, len(lease.Blocks))
	for i, b := range lease.Blocks {
		pairs[i] = transport.BlockPair{Src: int32(i), Dst: b}
	}
	out, err := transport.Push(ctx, c, src, transport.Plan{Grant: g, Pairs: pairs, ChunkBytes: 4096})
	if err != nil {
		return fail(err)
	}
	if err := out.SendLayer(ctx, 0); err != nil {
		return fail(err)
	}
	fmt.Println("sent")
	time.Sleep(time.Minute) // killed before this ends
	return 2
}

// A sender process killed with SIGKILL mid-transfer: its TCP connection
// dies with it, and the receiver frees the blocks at once, without waiting
// for the lease to expire (the fake clock never moves).
func TestGRPC_SenderProcessKilled(t *testing.T) {
	n := newNode(t)
	tlsCfg, err := n.pki.Issue("prefill-child")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(childSpec{Addr: n.addr, TLS: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(raw))
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
	n.waitData(t, "child")
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
}
