package coordtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist and raft leave timer-driven goroutines that exit shortly after shutdown.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"),
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*Raft).runFSM"),
		goleak.IgnoreAnyFunction("github.com/hashicorp/raft.(*InmemTransport).makeRPC"),
	)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func placeReq(id string, prompt int) *pb.PlaceRequest {
	return &pb.PlaceRequest{RequestId: id, Model: "m", PromptTokens: int32(prompt), MaxTokens: 32, BlockTokens: 16}
}

func setupModel(t *testing.T, cl *client.Client) {
	t.Helper()
	if err := cl.SetModel(ctxT(t, 5*time.Second), &pb.Model{Id: "m", BlockTokens: 16}); err != nil {
		t.Fatal(err)
	}
}

func TestElection(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("voters=%d", n), func(t *testing.T) {
			c := MakeCluster(t, n)
			leader := c.WaitLeader(t)
			cl := c.Client(t)
			// Every node must come to name the same leader (a follower learns it with the
			// first heartbeat of the new term).
			for _, nd := range c.Nodes {
				Eventually(t, 5*time.Second, nd.ID+" to report the leader", func() bool {
					st, err := nd.Server.Status(context.Background())
					return err == nil && st.GetLeaderId() == leader.ID && len(st.GetServers()) == n && st.GetTerm() > 0
				})
			}
			st, err := cl.Status(ctxT(t, 5*time.Second))
			if err != nil || len(st.GetServers()) != n {
				t.Fatalf("status over gRPC: %v, %d servers, want %d", err, len(st.GetServers()), n)
			}
		})
	}
}

func TestLeaderFailPlacesWithinThreeSeconds(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	c.AddWorker(t, "d1", "decode", nil)
	if _, err := cl.Place(ctxT(t, 5*time.Second), placeReq("r1", 100)); err != nil {
		t.Fatal(err)
	}
	old := c.WaitLeader(t)
	st, err := old.Server.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Kill(old)
	p2, err := cl.Place(ctxT(t, 3*time.Second), placeReq("r2", 100))
	if err != nil {
		t.Fatalf("no placement within 3 s of leader loss: %v", err)
	}
	t.Logf("placing again %s after leader kill", time.Since(start))
	if p2.GetTerm() <= st.GetTerm() {
		t.Fatalf("new placement term %d not above the killed leader's term %d", p2.GetTerm(), st.GetTerm())
	}
	if nl := c.WaitLeader(t); nl == old {
		t.Fatal("dead node still leader")
	}
}

func TestLeaderPartition(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	c.AddWorker(t, "d1", "decode", nil)
	old := c.WaitLeader(t)
	c.Partition(old.ID)
	var nl *Node
	Eventually(t, 5*time.Second, "a new leader on the majority side", func() bool {
		for _, f := range c.Nodes {
			if f != old && f.Server.IsLeader() {
				nl = f
				return true
			}
		}
		return false
	})
	Eventually(t, 5*time.Second, "the isolated leader to step down", func() bool { return !old.Server.IsLeader() })
	// The isolated node cannot place: it is no leader and cannot reach one.
	if _, err := old.Server.Place(context.Background(), placeReq("x", 100)); !errors.Is(err, coordinator.ErrNotLeader) {
		t.Fatalf("isolated old leader placed: err = %v", err)
	}
	if _, err := nl.Server.Place(context.Background(), placeReq("y", 100)); err != nil {
		t.Fatalf("new leader cannot place: %v", err)
	}
	c.Heal()
	Eventually(t, 5*time.Second, "old leader to catch up", func() bool {
		return old.Server.State().Index >= nl.Server.State().Index && old.Server.State().Nodes["d1"].ID == "d1"
	})
}

func TestSnapshotRestoreOnNewVoter(t *testing.T) {
	c := MakeClusterWith(t, 1, func(cfg *coordinator.Config) { cfg.Raft.TrailingLogs = 1 })
	leader := c.WaitLeader(t)
	cl := c.Client(t)
	setupModel(t, cl)
	if err := cl.SetModel(ctxT(t, 5*time.Second), &pb.Model{Id: "m2", Pools: []string{"gpu"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SnapshotSave(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The log before the snapshot is compacted, so the joiner can only get it from the snapshot.
	joiner := c.AddVoter(t, "c1")
	Eventually(t, 5*time.Second, "new voter to restore the snapshot", func() bool {
		return len(joiner.Server.State().Models) == 2
	})
	want, got := leader.Server.State(), joiner.Server.State()
	if d := cmp.Diff(want.SortedModels(), got.SortedModels()); d != "" {
		t.Errorf("models (-leader +joiner):\n%s", d)
	}
}

func TestMembershipChange(t *testing.T) {
	c := MakeCluster(t, 1)
	cl := c.Client(t)
	c.AddVoter(t, "c1")
	c.AddVoter(t, "c2")
	st, err := cl.Status(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetServers()) != 3 {
		t.Fatalf("%d servers after two adds, want 3", len(st.GetServers()))
	}
	// Adding again with the same address is a no-op (a restarting node re-joins this way).
	if _, err := cl.AddPeer(ctxT(t, 5*time.Second), peerRequest(c.Nodes[1])); err != nil {
		t.Fatalf("re-adding peer: %v", err)
	}
	if err := cl.RemovePeer(ctxT(t, 5*time.Second), "c2"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 5*time.Second, "two voters", func() bool {
		st, err := cl.Status(ctxT(t, 5*time.Second))
		return err == nil && len(st.GetServers()) == 2
	})
	if err := cl.RemovePeer(ctxT(t, 5*time.Second), "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("removing unknown peer: err = %v, want ErrNotFound", err)
	}
}

func TestRestartRejoins(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	f := c.Followers()[0]
	c.Kill(f)
	setupModel(t, cl)
	c.Restart(f)
	Eventually(t, 5*time.Second, "restarted follower to catch up", func() bool {
		_, ok := f.Server.State().Models["m"]
		return ok
	})
}
