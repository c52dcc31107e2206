package coordinator_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// startCluster starts three coordinator processes on host (c0 bootstraps, c1 and c2 join through
// it), two decode and two prefill fake workers, and registers model "m".
func startCluster(t *testing.T, bin, host string, wrap func(i int) []string) ([]*proc, *client.Client) {
	t.Helper()
	dir := t.TempDir()
	var procs []*proc
	var addrs []string
	for i := range 3 {
		id := fmt.Sprint("c", i)
		data := filepath.Join(dir, id)
		var extra []string
		if i == 0 {
			extra = []string{"--bootstrap"}
		} else {
			extra = []string{"--join", addrs[0]}
		}
		g, args := nodeArgs(t, id, host, data, extra...)
		var w []string
		if wrap != nil {
			w = wrap(i)
		}
		procs = append(procs, startProc(t, bin, id, g, data, w, args))
		addrs = append(addrs, g)
		if i == 0 {
			waitCluster(t, newClient(t, g), 1)
		}
	}
	cl := newClient(t, addrs...)
	waitCluster(t, cl, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.SetModel(ctx, &pb.Model{Id: "m", BlockTokens: 16}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ id, role string }{{"d0", "decode"}, {"d1", "decode"}, {"p0", "prefill"}, {"p1", "prefill"}} {
		startWorker(t, cl, w.id, w.role, host)
	}
	return procs, cl
}

type outcome struct {
	p    *pb.Placement
	err  error
	done time.Time
}

// placeContinuously places unique requests from several goroutines until stop is closed.
func placeContinuously(cl *client.Client, stop <-chan struct{}) map[string]outcome {
	var (
		mu  sync.Mutex
		res = map[string]outcome{}
		wg  sync.WaitGroup
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("req-%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				p, err := cl.Place(ctx, &pb.PlaceRequest{RequestId: id, Model: "m", PromptTokens: 512, MaxTokens: 64, BlockTokens: 16})
				cancel()
				mu.Lock()
				res[id] = outcome{p: p, err: err, done: time.Now()}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res
}

// TestKillLeaderDuringPlacements kill -9s the leader process while placements run. Every request
// must get exactly one placement (none lost: no call fails; none duplicated: transfer ids are
// unique and a retry of a request id returns the same placement), every token must verify, and
// placements must resume under a higher term. The killed node then restarts with the same data
// dir and rejoins.
func TestKillLeaderDuringPlacements(t *testing.T) {
	bin := buildNode(t)
	procs, cl := startCluster(t, bin, "127.0.0.1", nil)
	st := waitCluster(t, cl, 3)
	oldTerm := st.GetTerm()
	leader := leaderProc(st, procs)

	stop := make(chan struct{})
	resCh := make(chan map[string]outcome, 1)
	go func() { resCh <- placeContinuously(cl, stop) }()
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	leader.kill()
	time.Sleep(4 * time.Second)
	close(stop)
	res := <-resCh

	seen := map[string]string{}
	var firstNewTerm time.Time
	for id, o := range res {
		if o.err != nil {
			t.Fatalf("request %s lost: %v", id, o.err)
		}
		if prev, dup := seen[o.p.GetTransferId()]; dup {
			t.Fatalf("transfer id %s given to %s and %s", o.p.GetTransferId(), prev, id)
		}
		seen[o.p.GetTransferId()] = id
		if err := client.VerifyTransferToken([]byte(secret), o.p, 0, time.Now()); err != nil {
			t.Fatalf("request %s: token does not verify: %v", id, err)
		}
		if o.p.GetTerm() > oldTerm && (firstNewTerm.IsZero() || o.done.Before(firstNewTerm)) {
			firstNewTerm = o.done
		}
	}
	if firstNewTerm.IsZero() {
		t.Fatal("no placement under a new term after the leader was killed")
	}
	t.Logf("%d placements, none lost or duplicated; first placement under the new leader %s after kill -9",
		len(res), firstNewTerm.Sub(killedAt).Round(time.Millisecond))

	// A retried request id gets the same placement from the same leader.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := cl.Place(ctx, &pb.PlaceRequest{RequestId: "retry-me", Model: "m", PromptTokens: 64})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cl.Place(ctx, &pb.PlaceRequest{RequestId: "retry-me", Model: "m", PromptTokens: 64})
	if err != nil || b.GetTransferId() != a.GetTransferId() {
		t.Fatalf("retry got a second placement: %v, %s vs %s", err, b.GetTransferId(), a.GetTransferId())
	}

	// The killed node restarts with the same data dir and command line and rejoins.
	leader.start(t)
	waitCluster(t, cl, 3)
}
