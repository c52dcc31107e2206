package coordinator_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

const (
	secret     = "multi-process-cluster-secret-0123456789"
	adminToken = "multi-process-admin-token"
)

// buildNode compiles the coordinator binary once per test binary run.
func buildNode(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "coordnode")
	cmd := exec.Command("go", "build", "-o", bin, "./coordnode")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one coordinator process.
type proc struct {
	id       string
	grpc     string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan struct{}
	args     []string
	wrap     []string // command prefix (ip netns exec NS)
	bin      string
	dataDir  string
	stopOnce sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// nodeArgs are the flags for one node listening on host.
func nodeArgs(t *testing.T, id, host, dataDir string, extra ...string) (string, []string) {
	grpcAddr := freeAddr(t, host)
	args := []string{
		"--id", id, "--data-dir", dataDir,
		"--raft-addr", freeAddr(t, host), "--grpc-addr", grpcAddr, "--gossip-addr", freeAddr(t, host),
		"--gossip-probe-interval", "200ms", "--dead-grace", "2s", "--log-level", "warn",
	}
	return grpcAddr, append(args, extra...)
}

func startProc(t *testing.T, bin, id, grpcAddr, dataDir string, wrap, args []string) *proc {
	t.Helper()
	p := &proc{id: id, grpc: grpcAddr, bin: bin, args: args, wrap: wrap, dataDir: dataDir}
	p.start(t)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", p.id, p.log.String())
		}
	})
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	argv := append(append([]string{}, p.wrap...), p.bin)
	argv = append(argv, p.args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), "TANDEM_CLUSTER_SECRET="+secret, "TANDEM_ADMIN_TOKEN="+adminToken)
	p.log = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	p.stopOnce = sync.Once{}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
}

// kill sends SIGKILL: no graceful leave, no flushing, like a crashed machine.
func (p *proc) kill() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	})
}

func newClient(t *testing.T, addrs ...string) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Addrs: addrs, Token: adminToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCluster waits until one coordinator reports n voters, all alive, and a leader.
func waitCluster(t *testing.T, cl *client.Client, n int) *pb.StatusResponse {
	t.Helper()
	var st, last *pb.StatusResponse
	defer func() {
		if st == nil {
			t.Logf("last status: %v", last)
		}
	}()
	eventually(t, 30*time.Second, fmt.Sprintf("%d healthy voters with a leader", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s, err := cl.Status(ctx)
		last = s
		if err != nil || s.GetLeaderId() == "" || len(s.GetServers()) != n {
			return false
		}
		for _, srv := range s.GetServers() {
			if srv.GetHealth() != "alive" {
				return false
			}
		}
		st = s
		return true
	})
	return st
}

// worker is a fake worker in the test process: registered, gossiping and reporting load.
type worker struct {
	agent  *membership.Agent
	cancel context.CancelFunc
	done   chan struct{}
}

func startWorker(t *testing.T, cl *client.Client, id, role, host string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cl.Register(ctx, &pb.NodeInfo{Id: id, Role: role, GrpcAddr: id + ":1", Backend: "cpu", Devices: []*pb.Device{{Kind: "cpu", Name: "test"}}})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	a, err := membership.New(membership.Config{
		NodeID: id, BindAddr: host, BindPort: 0, ProbeInterval: 200 * time.Millisecond,
		Meta: membership.Meta{Role: role, GRPCAddr: id + ":1"},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Join(ctx, resp.GetGossipSeeds()); err != nil {
		a.Kill()
		t.Fatalf("worker gossip join: %v", err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	w := &worker{agent: a, cancel: rcancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		_ = cl.RunLoadReporter(rctx, 100*time.Millisecond, func() *pb.Load {
			return &pb.Load{NodeId: id, FreeKvBlocks: 1 << 24, TotalKvBlocks: 1 << 24, BlockTokens: 16}
		}, nil)
	}()
	t.Cleanup(func() {
		w.cancel()
		<-w.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = w.agent.Close(ctx)
	})
}

func leaderProc(st *pb.StatusResponse, procs []*proc) *proc {
	for _, p := range procs {
		if p.id == st.GetLeaderId() {
			return p
		}
	}
	return nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if strings.TrimSpace(x) == v {
			return true
		}
	}
	return false
}
