package coordinator

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := memServer(t, reg)
	ctx := context.Background()
	if err := s.SetModel(ctx, &pb.Model{Id: "m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, &pb.RegisterRequest{Node: &pb.NodeInfo{Id: "d", Role: "decode", GrpcAddr: "d:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Place(ctx, &pb.PlaceRequest{Model: "m", PromptTokens: 10}); err != nil {
		t.Fatal(err)
	}
	s.metrics.observeRaft(s.raft)
	s.metrics.observeState(s.State())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, f := range families {
		got[f.GetName()] = f
	}
	if h := got["tandem_placement_duration_seconds"]; h == nil || h.GetMetric()[0].GetHistogram().GetSampleCount() != 1 {
		t.Fatalf("placement histogram: %v", h)
	}
	if g := got["tandem_raft_state"]; g == nil || g.GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Fatalf("raft state gauge (2 = leader): %v", g)
	}
	if g := got["tandem_raft_term"]; g == nil || g.GetMetric()[0].GetGauge().GetValue() < 1 {
		t.Fatalf("raft term gauge: %v", g)
	}
	if g := got["tandem_nodes"]; g == nil || len(g.GetMetric()) < 2 {
		t.Fatalf("nodes by role and state: %v", g)
	}
	// A second coordinator on the same registry is a configuration error, not a panic.
	cfg := validConfig()
	cfg.Gossip.Transport = membership.NewTestNetwork().NewTransport("x")
	if _, err := New(cfg, Deps{Registry: reg}); err == nil {
		t.Fatal("second registration on one registry succeeded")
	}
}
