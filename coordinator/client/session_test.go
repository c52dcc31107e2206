package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/coordtest"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func TestSessionLifecycle(t *testing.T) {
	c := coordtest.MakeCluster(t, 1)
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.SetModel(ctx, &pb.Model{Id: "m"}); err != nil {
		t.Fatal(err)
	}
	gossip := coordtest.FastGossip()
	gossip.Transport = c.Net.NewTransport("w1")
	s, err := cl.Join(ctx, client.WorkerConfig{
		Node:   &pb.NodeInfo{Id: "w1", Role: "decode", GrpcAddr: "w1:1"},
		Gossip: gossip,
		Sample: func() *pb.Load { return &pb.Load{FreeKvBlocks: 10, TotalKvBlocks: 10, BlockTokens: 16} },
	})
	if err != nil {
		t.Fatal(err)
	}
	p, err := cl.Place(ctx, &pb.PlaceRequest{Model: "m", PromptTokens: 16})
	if err != nil || p.GetDecode().GetNodeId() != "w1" {
		t.Fatalf("placement on the joined worker: %v, %v", p, err)
	}
	if _, err := cl.Drain(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	coordtest.Eventually(t, 5*time.Second, "session to see the drain", func() bool {
		st := s.State()
		return st == "draining" || st == "drained"
	})
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Join(ctx, client.WorkerConfig{}); !errors.Is(err, client.ErrConfig) {
		t.Fatalf("join without a node: %v", err)
	}
}
