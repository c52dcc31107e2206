package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/placement"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Register records a worker or gateway (leader only). Re-registering is idempotent and is how a
// restarted worker returns from dead.
func (s *Server) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	ni := req.GetNode()
	n := nodeFromProto(ni)
	switch n.Role {
	case fsm.RolePrefill, fsm.RoleDecode, fsm.RoleGateway:
	default:
		return nil, fmt.Errorf("%w: role %q cannot register (coordinators join with AddPeer)", ErrInvalid, ni.GetRole())
	}
	if old, ok := s.fsm.State().Nodes[n.ID]; ok && old.Role != n.Role {
		return nil, fmt.Errorf("%w: node %q is registered as %s", ErrInvalid, n.ID, old.Role)
	}
	if err := s.apply(ctx, fsm.CmdRegisterNode, fsm.RegisterNode{Node: n, At: s.clock.Now().UnixNano()}); err != nil {
		return nil, err
	}
	return &pb.RegisterResponse{
		Term:           s.leaderTerm.Load(),
		LeaderId:       s.cfg.NodeID,
		GossipSeeds:    s.gossipSeeds(),
		LoadIntervalMs: s.cfg.LoadInterval.Milliseconds(),
	}, nil
}

// ReportLoad stores a worker's load (leader only) and returns the worker's replicated state.
func (s *Server) ReportLoad(ctx context.Context, req *pb.ReportLoadRequest) (*pb.ReportLoadResponse, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	l := req.GetLoad()
	n, ok := s.fsm.State().Nodes[l.GetNodeId()]
	if !ok {
		return nil, fmt.Errorf("%w: %q (register first)", ErrUnknownNode, l.GetNodeId())
	}
	if l.GetQueueDepth() < 0 || l.GetRunning() < 0 || l.GetWaiting() < 0 || l.GetFreeKvBlocks() < 0 ||
		l.GetTotalKvBlocks() < 0 || l.GetInFlight() < 0 || l.GetFreeKvBlocks() > l.GetTotalKvBlocks() {
		return nil, fmt.Errorf("%w: inconsistent load report from %q", ErrInvalid, n.ID)
	}
	s.loads.report(l)
	if n.State == fsm.StateDraining && s.loads.idle(n.ID, time.Unix(0, n.StateSince)) {
		s.changeState(ctx, n, fsm.StateDrained, "drain complete: no work in flight")
		n = s.fsm.State().Nodes[n.ID]
	}
	return &pb.ReportLoadResponse{State: string(n.State)}, nil
}

// Drain stops new placements on a node; it becomes drained when it reports no work in flight.
func (s *Server) Drain(ctx context.Context, id string) (*pb.NodeStatus, error) {
	return s.transition(ctx, id, fsm.StateDraining, "drain requested by operator", fsm.StateActive)
}

// Undrain returns a draining or drained node to service.
func (s *Server) Undrain(ctx context.Context, id string) (*pb.NodeStatus, error) {
	return s.transition(ctx, id, fsm.StateActive, "undrain requested by operator", fsm.StateDraining, fsm.StateDrained)
}

func (s *Server) transition(ctx context.Context, id string, to fsm.NodeState, reason string, from ...fsm.NodeState) (*pb.NodeStatus, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	// The change is conditional on the state read here, so that it never overwrites a transition
	// it did not see. The leader moves nodes on its own too (draining to drained when a worker
	// reports idle, to dead when gossip loses it); when one of those lands first the operator's
	// request is checked again against the new state instead of being dropped.
	const attempts = 4
	for range attempts {
		n, ok := s.fsm.State().Nodes[id]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
		}
		if n.State == to {
			return s.nodeStatus(n), nil
		}
		if !slices.Contains(from, n.State) {
			return nil, fmt.Errorf("%w: %q is %s, cannot become %s", ErrStateConflict, id, n.State, to)
		}
		err := s.apply(ctx, fsm.CmdSetNodeState, fsm.ChangeFrom(n, to, reason, s.clock.Now().UnixNano()))
		switch {
		case err == nil:
			// Read after the entry applied: a later change may already show, which is the truth.
			return s.nodeStatus(s.fsm.State().Nodes[id]), nil
		case !errors.Is(err, fsm.ErrStale):
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %q kept changing state; try again", ErrStateConflict, id)
}

// AddPeer adds a coordinator to the Raft configuration (leader only) and records its addresses.
// Adding a peer already present with the same address is a no-op, so a restarting node may call
// it again.
func (s *Server) AddPeer(ctx context.Context, req *pb.AddPeerRequest) (*pb.AddPeerResponse, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	if req.GetId() == "" || req.GetRaftAddr() == "" || req.GetGrpcAddr() == "" {
		return nil, fmt.Errorf("%w: peer needs id, raft address and grpc address", ErrInvalid)
	}
	if err := s.apply(ctx, fsm.CmdRegisterNode, fsm.RegisterNode{
		Node: fsm.Node{ID: req.GetId(), Role: fsm.RoleCoordinator, GRPCAddr: req.GetGrpcAddr(), RaftAddr: req.GetRaftAddr()},
		At:   s.clock.Now().UnixNano(),
	}); err != nil {
		return nil, err
	}
	id, addr := raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddr())
	var f raft.IndexFuture
	if req.GetNonvoter() {
		f = s.raft.AddNonvoter(id, addr, 0, s.cfg.ApplyTimeout)
	} else {
		f = s.raft.AddVoter(id, addr, 0, s.cfg.ApplyTimeout)
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, ErrNotLeader
		}
		return nil, fmt.Errorf("coordinator: add peer %s: %w", id, err)
	}
	s.log.Info("peer added", "peer", id, "raft_addr", addr, "voter", !req.GetNonvoter())
	return &pb.AddPeerResponse{GossipSeeds: s.gossipSeeds()}, nil
}

// RemovePeer removes a coordinator from the Raft configuration and forgets its record.
func (s *Server) RemovePeer(ctx context.Context, id string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	if id == "" {
		return fmt.Errorf("%w: empty peer id", ErrInvalid)
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("coordinator: configuration: %w", err)
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		found = found || string(srv.ID) == id
	}
	if !found {
		return fmt.Errorf("%w: %q is not a raft peer", ErrUnknownNode, id)
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return ErrNotLeader
		}
		return fmt.Errorf("coordinator: remove peer %s: %w", id, err)
	}
	if _, ok := s.fsm.State().Nodes[id]; ok && id != s.cfg.NodeID {
		if err := s.apply(ctx, fsm.CmdRemoveNode, fsm.RemoveNode{ID: id}); err != nil && !errors.Is(err, ErrNotLeader) {
			return err
		}
	}
	s.log.Info("peer removed", "peer", id)
	return nil
}

// Status describes the Raft group as this node sees it. Any node answers, leader or not.
func (s *Server) Status(ctx context.Context) (*pb.StatusResponse, error) {
	leaderAddr, leaderID := s.raft.LeaderWithID()
	out := &pb.StatusResponse{
		LeaderId:     string(leaderID),
		LeaderAddr:   string(leaderAddr),
		Term:         s.raft.CurrentTerm(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		AnsweredBy:   s.cfg.NodeID,
		RaftState:    s.raft.State().String(),
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("coordinator: configuration: %w", err)
	}
	alive := map[string]bool{}
	for _, m := range s.gossip.Members() {
		alive[m.ID] = true
	}
	st := s.fsm.State()
	for _, srv := range cf.Configuration().Servers {
		health := "dead"
		if alive[string(srv.ID)] {
			health = "alive"
		}
		out.Servers = append(out.Servers, &pb.Server{
			Id: string(srv.ID), RaftAddr: string(srv.Address), GrpcAddr: st.Nodes[string(srv.ID)].GRPCAddr,
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leaderID, Health: health,
		})
	}
	sort.Slice(out.Servers, func(i, j int) bool { return out.Servers[i].GetId() < out.Servers[j].GetId() })
	return out, ctx.Err()
}

// Nodes lists registered nodes with their load (load is known only on the leader).
func (s *Server) Nodes(_ context.Context, role string) *pb.NodesResponse {
	out := &pb.NodesResponse{}
	for _, n := range s.fsm.State().SortedNodes() {
		if role != "" && string(n.Role) != role {
			continue
		}
		out.Nodes = append(out.Nodes, s.nodeStatus(n))
	}
	return out
}

func (s *Server) nodeStatus(n fsm.Node) *pb.NodeStatus {
	ns := &pb.NodeStatus{
		Info: nodeToProto(n), State: string(n.State), StateReason: n.StateReason,
		StateSinceUnixNano: n.StateSince, LoadAgeMs: -1,
	}
	if l, age := s.loads.snapshot(n.ID); l != nil {
		ns.Load, ns.LoadAgeMs = l, age.Milliseconds()
	}
	return ns
}

// Models lists models and the active nodes that can serve them.
func (s *Server) Models(context.Context) *pb.ModelsResponse {
	st := s.fsm.State()
	out := &pb.ModelsResponse{}
	for _, m := range st.SortedModels() {
		ms := &pb.ModelStatus{Model: &pb.Model{Id: m.ID, Pools: m.Pools, BlockTokens: int32(m.BlockTokens)}}
		for _, n := range st.SortedNodes() {
			if n.State != fsm.StateActive || !n.Serves(m.ID) || !m.InPool(n.Pool) {
				continue
			}
			switch n.Role {
			case fsm.RolePrefill:
				ms.PrefillNodes = append(ms.PrefillNodes, n.ID)
			case fsm.RoleDecode:
				ms.DecodeNodes = append(ms.DecodeNodes, n.ID)
			}
		}
		out.Models = append(out.Models, ms)
	}
	return out
}

// SetModel adds or replaces a model (leader only).
func (s *Server) SetModel(ctx context.Context, m *pb.Model) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	return s.apply(ctx, fsm.CmdUpsertModel, fsm.UpsertModel{Model: fsm.Model{ID: m.GetId(), Pools: m.GetPools(), BlockTokens: int(m.GetBlockTokens())}})
}

// RemoveModel forgets a model (leader only).
func (s *Server) RemoveModel(ctx context.Context, id string) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	return s.apply(ctx, fsm.CmdRemoveModel, fsm.RemoveModel{ID: id})
}

// Policy returns the replicated placement policy.
func (s *Server) Policy() *pb.PolicyResponse {
	p := s.fsm.State().Policy
	spec := string(p.Spec)
	if spec == "" {
		b, _ := json.Marshal(placement.DefaultSpec())
		spec = string(b)
	}
	return &pb.PolicyResponse{SpecJson: spec, Version: p.Version}
}

// SetPolicy validates a policy against this binary's plugins and replicates it (leader only).
func (s *Server) SetPolicy(ctx context.Context, specJSON string) (*pb.PolicyResponse, error) {
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	spec, err := placement.ParseSpec([]byte(specJSON))
	if err != nil {
		return nil, err
	}
	if err := s.setPolicy(ctx, spec); err != nil {
		return nil, err
	}
	return s.Policy(), nil
}

func (s *Server) setPolicy(ctx context.Context, spec placement.PolicySpec) error {
	if _, err := s.registry.Build(spec); err != nil {
		return err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("coordinator: encode policy: %w", err)
	}
	return s.apply(ctx, fsm.CmdSetPolicy, fsm.SetPolicy{Spec: b})
}

// SnapshotSave takes a Raft snapshot on this node now.
func (s *Server) SnapshotSave(context.Context) (*pb.SnapshotSaveResponse, error) {
	f := s.raft.Snapshot()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return nil, fmt.Errorf("%w: nothing new to snapshot", ErrStateConflict)
		}
		return nil, fmt.Errorf("coordinator: snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("coordinator: snapshot: %w", err)
	}
	rc.Close()
	return &pb.SnapshotSaveResponse{Id: meta.ID, Index: meta.Index, Term: meta.Term}, nil
}

// CoordinatorGossipAddrs lists the gossip addresses of live coordinators other than this one.
func (s *Server) CoordinatorGossipAddrs() []string {
	var out []string
	for _, m := range s.gossip.Members() {
		if m.Meta.Role == string(fsm.RoleCoordinator) && m.ID != s.cfg.NodeID {
			out = append(out, m.Addr)
		}
	}
	return out
}

// gossipSeeds lists the gossip addresses of live coordinators, for workers and new peers to join.
func (s *Server) gossipSeeds() []string {
	var out []string
	for _, m := range s.gossip.Members() {
		if m.Meta.Role == string(fsm.RoleCoordinator) {
			out = append(out, m.Addr)
		}
	}
	return out
}

func nodeFromProto(ni *pb.NodeInfo) fsm.Node {
	n := fsm.Node{
		ID: ni.GetId(), Role: fsm.Role(ni.GetRole()), GRPCAddr: ni.GetGrpcAddr(), TransportAddr: ni.GetTransportAddr(),
		Version: ni.GetVersion(), Pool: ni.GetPool(), Models: ni.GetModels(), Backend: ni.GetBackend(), TPDegree: int(ni.GetTpDegree()),
	}
	for _, d := range ni.GetDevices() {
		n.Devices = append(n.Devices, fsm.Device{Kind: d.GetKind(), Name: d.GetName(), MemoryBytes: d.GetMemoryBytes()})
	}
	return n
}

func nodeToProto(n fsm.Node) *pb.NodeInfo {
	ni := &pb.NodeInfo{
		Id: n.ID, Role: string(n.Role), GrpcAddr: n.GRPCAddr, TransportAddr: n.TransportAddr, Version: n.Version,
		Pool: n.Pool, Models: n.Models, Backend: n.Backend, TpDegree: int32(n.TPDegree),
	}
	for _, d := range n.Devices {
		ni.Devices = append(ni.Devices, &pb.Device{Kind: d.Kind, Name: d.Name, MemoryBytes: d.MemoryBytes})
	}
	return ni
}
