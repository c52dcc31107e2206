package coordtest

import (
	"errors"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// TestFollowerForwards talks to one follower only: leader-only calls are forwarded with the
// caller's admin token, and reads come back with the leader's load view.
func TestFollowerForwards(t *testing.T) {
	c := MakeClusterOpts(t, Options{Voters: 3, AdminToken: "tok"})
	c.AddWorker(t, "d1", "decode", nil)
	f := c.Followers()[0]
	cl, err := client.New(client.Config{Addrs: []string{f.GRPCAddr}, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := ctxT(t, 10*time.Second)
	if err := cl.SetModel(ctx, &pb.Model{Id: "m"}); err != nil {
		t.Fatalf("set model through a follower: %v", err)
	}
	if _, err := cl.Place(ctx, placeReq("r", 32)); err != nil {
		t.Fatalf("place through a follower: %v", err)
	}
	nodes, err := cl.Nodes(ctx, "decode")
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetLoad() == nil {
		t.Fatalf("nodes through a follower lack the leader's load view: %v %v", nodes, err)
	}
	if _, err := cl.Drain(ctx, "d1"); err != nil {
		t.Fatalf("drain through a follower: %v", err)
	}
	st, err := cl.Status(ctx)
	if err != nil || st.GetAnsweredBy() != f.ID {
		t.Fatalf("status is answered locally: %v %v", st, err)
	}
	noToken, err := client.New(client.Config{Addrs: []string{f.GRPCAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer noToken.Close()
	if _, err := noToken.Drain(ctx, "d1"); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("drain without token: %v", err)
	}
}
