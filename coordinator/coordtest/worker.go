package coordtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Worker is a fake prefill or decode worker: it registers, joins gossip and reports load in the
// background, like a real worker, without computing anything.
type Worker struct {
	ID     string
	Role   string
	agent  *membership.Agent
	client *client.Client

	mu    sync.Mutex
	load  *pb.Load
	state string

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// AddWorker registers a worker with role ("prefill" or "decode") and starts its gossip agent and
// load reporter. load may be nil (idle, 1000 free blocks of 16 tokens).
func (c *Cluster) AddWorker(t testing.TB, id, role string, load *pb.Load) *Worker {
	t.Helper()
	if load == nil {
		load = &pb.Load{FreeKvBlocks: 1000, TotalKvBlocks: 1000, BlockTokens: 16}
	}
	load.NodeId = id
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Register(ctx, &pb.NodeInfo{
		Id: id, Role: role, GrpcAddr: id + ":7000", TransportAddr: id + ":7001", Backend: "cpu",
		Devices: []*pb.Device{{Kind: "cpu", Name: "test"}},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	gc := FastGossip()
	gc.NodeID = id
	gc.Transport = c.Net.NewTransport(id)
	gc.Meta = membership.Meta{Role: role, GRPCAddr: id + ":7000"}
	agent, err := membership.New(gc, nil, testLogger(t, id))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Join(ctx, resp.GetGossipSeeds()); err != nil {
		agent.Kill()
		t.Fatalf("worker %s gossip join: %v", id, err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	w := &Worker{ID: id, Role: role, agent: agent, client: cl, load: load, cancel: rcancel, done: make(chan struct{})}
	// The first report is synchronous so that tests start from a known load.
	st, err := cl.ReportLoad(ctx, w.sample())
	if err != nil {
		rcancel()
		agent.Kill()
		t.Fatalf("worker %s first load report: %v", id, err)
	}
	w.setState(st)
	go func() {
		defer close(w.done)
		_ = cl.RunLoadReporter(rctx, 20*time.Millisecond, w.sample, w.setState)
	}()
	c.mu.Lock()
	c.workers = append(c.workers, w)
	c.mu.Unlock()
	return w
}

func (w *Worker) sample() *pb.Load {
	w.mu.Lock()
	defer w.mu.Unlock()
	return &pb.Load{
		NodeId: w.load.NodeId, QueueDepth: w.load.QueueDepth, Running: w.load.Running, Waiting: w.load.Waiting,
		FreeKvBlocks: w.load.FreeKvBlocks, TotalKvBlocks: w.load.TotalKvBlocks, BlockTokens: w.load.BlockTokens,
		PrefixHashes: w.load.PrefixHashes, InFlight: w.load.InFlight,
	}
}

func (w *Worker) setState(s string) {
	w.mu.Lock()
	w.state = s
	w.mu.Unlock()
}

// SetLoad changes what the worker reports from its next report on.
func (w *Worker) SetLoad(f func(*pb.Load)) {
	w.mu.Lock()
	f(w.load)
	w.mu.Unlock()
}

// State is the replicated state the coordinator returned with the last load report.
func (w *Worker) State() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// Kill crashes the worker: gossip stops without a leave and load reports stop.
func (w *Worker) Kill() {
	w.once.Do(func() {
		w.cancel()
		<-w.done
		_ = w.agent.Kill()
	})
}
