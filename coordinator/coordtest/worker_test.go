package coordtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/fsm"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func nodeState(c *Cluster, id string) fsm.NodeState {
	l := c.Leader()
	if l == nil {
		return ""
	}
	return l.Server.State().Nodes[id].State
}

func TestWorkerDeathAndRecovery(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	d1 := c.AddWorker(t, "d1", "decode", nil)
	c.AddWorker(t, "d2", "decode", nil)
	d1.Kill()
	Eventually(t, 5*time.Second, "d1 recorded dead", func() bool { return nodeState(c, "d1") == fsm.StateDead })
	for i := range 20 {
		p, err := cl.Place(ctxT(t, 5*time.Second), placeReq(fmt.Sprint("r", i), 100))
		if err != nil {
			t.Fatal(err)
		}
		if p.GetDecode().GetNodeId() == "d1" {
			t.Fatalf("placed on dead worker d1")
		}
	}
	// The worker restarts under the same id: it registers again and gossips again.
	c.AddWorker(t, "d1", "decode", nil)
	Eventually(t, 5*time.Second, "d1 active again", func() bool { return nodeState(c, "d1") == fsm.StateActive })
}

func TestDrain(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	busy := &pb.Load{FreeKvBlocks: 1000, TotalKvBlocks: 1000, BlockTokens: 16, Running: 2, InFlight: 2}
	d1 := c.AddWorker(t, "d1", "decode", busy)
	c.AddWorker(t, "d2", "decode", nil)
	ns, err := cl.Drain(ctxT(t, 5*time.Second), "d1")
	if err != nil {
		t.Fatal(err)
	}
	if ns.GetState() != string(fsm.StateDraining) {
		t.Fatalf("state after drain = %q", ns.GetState())
	}
	for i := range 20 {
		p, err := cl.Place(ctxT(t, 5*time.Second), placeReq(fmt.Sprint("r", i), 100))
		if err != nil {
			t.Fatal(err)
		}
		if p.GetDecode().GetNodeId() == "d1" {
			t.Fatal("placed on draining worker")
		}
	}
	Eventually(t, 5*time.Second, "worker told it is draining", func() bool { return d1.State() == "draining" })
	if got := nodeState(c, "d1"); got != fsm.StateDraining {
		t.Fatalf("drained while work in flight: %s", got)
	}
	d1.SetLoad(func(l *pb.Load) { l.Running, l.InFlight = 0, 0 })
	Eventually(t, 5*time.Second, "d1 drained", func() bool { return nodeState(c, "d1") == fsm.StateDrained })
	if _, err := cl.Drain(ctxT(t, 5*time.Second), "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("drain unknown: %v", err)
	}
	if _, err := cl.Undrain(ctxT(t, 5*time.Second), "d1"); err != nil {
		t.Fatal(err)
	}
	if got := nodeState(c, "d1"); got != fsm.StateActive {
		t.Fatalf("after undrain: %s", got)
	}
}

func TestResumeAfterDecodeDeath(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	d1 := c.AddWorker(t, "d1", "decode", nil)
	// d2 looks busier so the first placement surely goes to d1.
	c.AddWorker(t, "d2", "decode", &pb.Load{FreeKvBlocks: 500, TotalKvBlocks: 1000, BlockTokens: 16, QueueDepth: 3})
	c.AddWorker(t, "p1", "prefill", nil)
	ctx := ctxT(t, 10*time.Second)
	req := &pb.PlaceRequest{RequestId: "stream-1", Model: "m", PromptTokens: 600, MaxTokens: 100, BlockTokens: 16}
	p, err := cl.Place(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if p.GetDecode().GetNodeId() != "d1" || p.GetColocated() || p.GetPrefill().GetNodeId() != "p1" {
		t.Fatalf("first placement = decode %s prefill %s colocated %v", p.GetDecode().GetNodeId(), p.GetPrefill().GetNodeId(), p.GetColocated())
	}
	// The gateway has streamed 40 tokens when d1 dies mid-generation.
	d1.Kill()
	r, err := cl.Resume(ctx, p, "d1", 40, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetDecode().GetNodeId() != "d2" {
		t.Fatalf("resumed on %s, want d2", r.GetDecode().GetNodeId())
	}
	if r.GetPromptTokens() != 640 || r.GetMaxTokens() != 60 || r.GetRequestId() != "stream-1" {
		t.Fatalf("resume carries prompt %d max %d id %q, want 640, 60, stream-1", r.GetPromptTokens(), r.GetMaxTokens(), r.GetRequestId())
	}
	if r.GetTransferId() == p.GetTransferId() {
		t.Fatal("resume reused the transfer id")
	}
	if err := client.VerifyTransferToken(Secret(), r, r.GetTerm(), time.Now()); err != nil {
		t.Fatalf("resume token: %v", err)
	}
	// A repeated resume (the gateway retried) returns the same placement.
	r2, err := cl.Resume(ctx, p, "d1", 40, nil)
	if err != nil || r2.GetTransferId() != r.GetTransferId() {
		t.Fatalf("repeated resume: %v, transfer %s vs %s", err, r2.GetTransferId(), r.GetTransferId())
	}
	// A forged placement is refused.
	forged := &pb.Placement{Decode: &pb.Endpoint{NodeId: "d1"}, TransferId: "x", TransferToken: "AAAA", Model: "m", PromptTokens: 10}
	if _, err := cl.Resume(ctx, forged, "d1", 1, nil); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("forged resume: err = %v, want ErrPermissionDenied", err)
	}
	// Nothing left to generate.
	if _, err := cl.Resume(ctx, p, "d1", 100, nil); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("resume with nothing left: err = %v", err)
	}
}

func TestReportFailureReplaces(t *testing.T) {
	c := MakeCluster(t, 1)
	cl := c.Client(t)
	setupModel(t, cl)
	c.AddWorker(t, "d1", "decode", nil)
	c.AddWorker(t, "d2", "decode", nil)
	ctx := ctxT(t, 5*time.Second)
	p, err := cl.Place(ctx, placeReq("r", 100))
	if err != nil {
		t.Fatal(err)
	}
	bad := p.GetDecode().GetNodeId()
	np, err := cl.ReportFailure(ctx, p, bad, "attach refused")
	if err != nil {
		t.Fatal(err)
	}
	if np.GetDecode().GetNodeId() == bad {
		t.Fatalf("re-placed on the failed node %s", bad)
	}
	if _, err := cl.ReportFailure(ctx, p, "stranger", "x"); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("failure of a node outside the placement: %v", err)
	}
}

func TestNoCapacity(t *testing.T) {
	c := MakeCluster(t, 1)
	cl := c.Client(t)
	setupModel(t, cl)
	c.AddWorker(t, "d1", "decode", &pb.Load{FreeKvBlocks: 1, TotalKvBlocks: 1000, BlockTokens: 16})
	Eventually(t, 5*time.Second, "load report", func() bool {
		ns, err := cl.Nodes(ctxT(t, time.Second), "decode")
		return err == nil && len(ns.GetNodes()) == 1 && ns.GetNodes()[0].GetLoad() != nil
	})
	if _, err := cl.Place(ctxT(t, 5*time.Second), placeReq("big", 1000)); !errors.Is(err, client.ErrNoCapacity) {
		t.Fatalf("err = %v, want ErrNoCapacity", err)
	}
	if _, err := cl.Place(ctxT(t, 5*time.Second), &pb.PlaceRequest{Model: "other", PromptTokens: 5}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown model: err = %v, want ErrNotFound", err)
	}
}

// TestPlacementUnderChurn places continuously from several goroutines while workers die and
// drain and the leader is killed. Once a worker's exclusion is committed in term T, no placement
// from a later term may name it (a deposed leader may still answer with an older term for a
// moment; those placements are fenced by their term). Transfer ids are unique.
func TestPlacementUnderChurn(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	workers := map[string]*Worker{}
	for i := range 4 {
		id := fmt.Sprint("d", i)
		workers[id] = c.AddWorker(t, id, "decode", nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		mu       sync.Mutex
		excluded = map[string]uint64{} // worker -> term from which it must not be used
		seen     = map[string]bool{}
		all      []*pb.Placement
		failures []string
	)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				p, err := cl.Place(pctx, placeReq(fmt.Sprintf("g%d-%d", g, i), 64))
				pcancel()
				mu.Lock()
				switch {
				case err != nil && ctx.Err() == nil:
					failures = append(failures, err.Error())
				case err == nil:
					all = append(all, p)
					if seen[p.GetTransferId()] {
						failures = append(failures, "duplicate transfer id")
					}
					seen[p.GetTransferId()] = true
				}
				mu.Unlock()
			}
		})
	}
	exclude := func(id string, want ...fsm.NodeState) {
		var term uint64
		Eventually(t, 5*time.Second, fmt.Sprint(id, " ", want), func() bool {
			l := c.Leader()
			if l == nil || !slices.Contains(want, l.Server.State().Nodes[id].State) {
				return false
			}
			st, err := l.Server.Status(context.Background())
			term = st.GetTerm()
			return err == nil
		})
		mu.Lock()
		excluded[id] = term
		mu.Unlock()
	}
	time.Sleep(100 * time.Millisecond)
	workers["d0"].Kill()
	exclude("d0", fsm.StateDead)
	if _, err := cl.Drain(ctxT(t, 5*time.Second), "d1"); err != nil {
		t.Fatal(err)
	}
	exclude("d1", fsm.StateDraining, fsm.StateDrained) // idle, so it may drain at once
	c.Kill(c.WaitLeader(t))
	c.WaitLeader(t)
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()

	// Placements decided after an exclusion applied carry its term or a later one.
	for _, p := range all {
		if term, ok := excluded[p.GetDecode().GetNodeId()]; ok && p.GetTerm() > term {
			failures = append(failures, fmt.Sprintf("placed on excluded worker %s in term %d (excluded in term %d)", p.GetDecode().GetNodeId(), p.GetTerm(), term))
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d failures, first: %s", len(failures), failures[0])
	}
	if len(all) < 50 {
		t.Fatalf("only %d placements under churn", len(all))
	}
	t.Logf("%d placements under churn", len(all))
}

// An operator's undrain must not be lost to the leader completing the drain at the same moment:
// both are conditional on the node being draining, and the one that loses re-checks.
func TestUndrainRacingDrainComplete(t *testing.T) {
	c := MakeCluster(t, 1)
	setupModel(t, c.Client(t))
	c.AddWorker(t, "d1", "decode", nil)
	srv := c.WaitLeader(t).Server
	ctx := ctxT(t, 20*time.Second)
	// Idle reports arrive all the time, so every drain completes within one report, racing the
	// undrain that follows it.
	idle := &pb.Load{NodeId: "d1", FreeKvBlocks: 1000, TotalKvBlocks: 1000, BlockTokens: 16}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() { close(stop); wg.Wait() }()
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := srv.ReportLoad(ctx, &pb.ReportLoadRequest{Load: idle}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 100 {
		if _, err := srv.Drain(ctx, "d1"); err != nil {
			t.Fatal(err)
		}
		ns, err := srv.Undrain(ctx, "d1")
		if err != nil {
			t.Fatalf("round %d: undrain: %v", i, err)
		}
		if ns.GetState() != string(fsm.StateActive) {
			t.Fatalf("round %d: undrain answered %q, want active", i, ns.GetState())
		}
		if got := nodeState(c, "d1"); got != fsm.StateActive {
			t.Fatalf("round %d: after undrain the node is %s", i, got)
		}
	}
}
