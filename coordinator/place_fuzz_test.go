package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/coordinator/placement"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// memServer starts a single-voter in-memory coordinator that leads, with workers that never
// go stale.
func memServer(tb testing.TB, reg prometheus.Registerer) *Server {
	tb.Helper()
	cfg := validConfig()
	cfg.Bootstrap = true
	cfg.DeadGrace, cfg.LoadTTL = time.Hour, time.Hour
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.Gossip.Transport = membership.NewTestNetwork().NewTransport("n")
	_, tr := raft.NewInmemTransport("")
	store := raft.NewInmemStore()
	s, err := New(cfg, Deps{Logger: discard(), Registry: reg, Transport: tr, LogStore: store, StableStore: store, SnapshotStore: raft.NewInmemSnapshotStore()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(context.Background()) })
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			tb.Fatal("no leadership")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// FuzzPlace feeds arbitrary requests to a leader: every answer must be a placement on a live
// decode worker or one of the documented errors, never a panic.
func FuzzPlace(f *testing.F) {
	s := memServer(f, nil)
	ctx := context.Background()
	if err := s.SetModel(ctx, &pb.Model{Id: "m", BlockTokens: 16}); err != nil {
		f.Fatal(err)
	}
	for _, id := range []string{"d1", "d2"} {
		if _, err := s.Register(ctx, &pb.RegisterRequest{Node: &pb.NodeInfo{Id: id, Role: "decode", GrpcAddr: id + ":1"}}); err != nil {
			f.Fatal(err)
		}
		if _, err := s.ReportLoad(ctx, &pb.ReportLoadRequest{Load: &pb.Load{NodeId: id, FreeKvBlocks: 100, TotalKvBlocks: 100, BlockTokens: 16, PrefixHashes: []uint64{1, 2}}}); err != nil {
			f.Fatal(err)
		}
	}
	f.Add("m", int32(100), int32(10), int32(16), []byte{1, 2}, "d1")
	f.Add("", int32(-1), int32(-5), int32(0), []byte{}, "")
	f.Add("m", int32(1<<30), int32(1<<30), int32(1), []byte{9}, "d2")
	f.Fuzz(func(t *testing.T, model string, prompt, maxTok, block int32, hashBytes []byte, exclude string) {
		hashes := make([]uint64, len(hashBytes))
		for i, b := range hashBytes {
			hashes[i] = uint64(b)
		}
		p, err := s.Place(ctx, &pb.PlaceRequest{Model: model, PromptTokens: prompt, MaxTokens: maxTok, BlockTokens: block, BlockHashes: hashes, Exclude: []string{exclude}})
		switch {
		case err == nil:
			if id := p.GetDecode().GetNodeId(); (id != "d1" && id != "d2") || id == exclude {
				t.Fatalf("placed on %q (excluded %q)", id, exclude)
			}
		case errors.Is(err, placement.ErrInvalidRequest), errors.Is(err, placement.ErrNoCapacity), errors.Is(err, ErrUnknownModel):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	})
}
