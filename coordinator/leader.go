package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/coordinator/placement"
)

// monitorLeadership follows raft.LeaderCh: it starts the leader loop when this node wins and stops
// (and joins) it when leadership is lost or the server closes.
func (s *Server) monitorLeadership() {
	defer s.wg.Done()
	var run *leaderRun
	stopLoop := func() {
		if run != nil {
			run.cancel()
			<-run.done
			run = nil
		}
	}
	defer stopLoop()
	for {
		select {
		case <-s.stop:
			return
		case isLeader := <-s.raft.LeaderCh():
			stopLoop()
			if isLeader {
				ctx, cancel := context.WithCancel(context.Background())
				run = &leaderRun{cancel: cancel, done: make(chan struct{})}
				go s.leaderLoop(ctx, run.done)
			}
		}
	}
}

// leaderRun is one running leader loop: its stop function and its exit signal.
type leaderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// leaderLoop is the leader-only work. It runs until ctx is cancelled (leadership lost or the
// server closing); applies in progress see the same ctx and return promptly.
func (s *Server) leaderLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	defer func() {
		s.leaderTerm.Store(0)
		s.cache.reset()
	}()
	if !s.establish(ctx) {
		return
	}
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-s.memberEvents:
			s.handleMemberEvent(ctx, e)
		case <-t.C:
			s.reconcile(ctx)
		}
	}
}

// establish makes the new leader ready: apply everything committed by earlier terms (Barrier),
// publish this node's gRPC address, install the default policy on a fresh cluster, and only then
// open placement by publishing the term. Retries until it works or leadership ends.
func (s *Server) establish(ctx context.Context) bool {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
			s.log.Warn("leader barrier failed", "err", err)
			continue
		}
		if err := s.publishSelf(ctx); err != nil {
			s.log.Warn("publishing leader address failed", "err", err)
			continue
		}
		if len(s.fsm.State().Policy.Spec) == 0 {
			if err := s.setPolicy(ctx, placement.DefaultSpec()); err != nil {
				s.log.Warn("installing default policy failed", "err", err)
				continue
			}
		}
		s.loads.reset()
		s.cache.reset()
		term := s.raft.CurrentTerm()
		s.leaderTerm.Store(term)
		s.log.Info("leadership established", "term", term)
		s.reconcile(ctx)
		return true
	}
}

func (s *Server) publishSelf(ctx context.Context) error {
	n, ok := s.fsm.State().Nodes[s.cfg.NodeID]
	if ok && n.GRPCAddr == s.cfg.GRPCAdvertise && n.RaftAddr == s.RaftAddr() && n.State == fsm.StateActive {
		return nil
	}
	return s.apply(ctx, fsm.CmdRegisterNode, fsm.RegisterNode{
		Node: fsm.Node{
			ID: s.cfg.NodeID, Role: fsm.RoleCoordinator, GRPCAddr: s.cfg.GRPCAdvertise,
			RaftAddr: s.RaftAddr(), Version: s.cfg.Version,
		},
		At: s.clock.Now().UnixNano(),
	})
}

func (s *Server) handleMemberEvent(ctx context.Context, e membership.Event) {
	n, ok := s.fsm.State().Nodes[e.Member.ID]
	if !ok {
		return
	}
	switch e.Type {
	case membership.EventLeave:
		if n.State != fsm.StateDead {
			s.markDead(ctx, n.ID, "gossip: node failed or left")
		}
	case membership.EventJoin, membership.EventUpdate:
		if n.State == fsm.StateDead {
			s.changeState(ctx, n, fsm.StateActive, "gossip: node recovered")
		}
	}
}

// reconcile compares the replicated node states with gossip and with load reports: nodes gone
// from gossip past DeadGrace become dead, dead nodes back in gossip become active again, and
// draining workers whose latest report shows no work become drained.
func (s *Server) reconcile(ctx context.Context) {
	alive := map[string]bool{}
	members := s.gossip.Members()
	for _, m := range members {
		alive[m.ID] = true
	}
	s.reconcilePeers(ctx, members)
	st := s.fsm.State()
	s.loads.retain(func(id string) bool { _, ok := st.Nodes[id]; return ok })
	now := s.clock.Now()
	for _, n := range st.SortedNodes() {
		if n.ID == s.cfg.NodeID {
			continue
		}
		switch {
		case !alive[n.ID] && n.State != fsm.StateDead &&
			now.Sub(time.Unix(0, n.StateSince)) > s.cfg.DeadGrace && s.gossipAbsentLong(n.ID, now):
			s.markDead(ctx, n.ID, "gossip: not a member")
		case alive[n.ID] && n.State == fsm.StateDead:
			s.changeState(ctx, n, fsm.StateActive, "gossip: node recovered")
		case n.State == fsm.StateDraining && s.loads.idle(n.ID, time.Unix(0, n.StateSince)):
			s.changeState(ctx, n, fsm.StateDrained, "drain complete: no work in flight")
		}
	}
}

// gossipAbsentLong reports whether the leader has known about id for at least DeadGrace. A node
// the leader only just learned about (new leader, fresh registration) gets the grace period to
// appear in gossip before it is declared dead.
func (s *Server) gossipAbsentLong(id string, now time.Time) bool {
	s.loads.mu.Lock()
	defer s.loads.mu.Unlock()
	e := s.loads.entryLocked(id, now)
	return now.Sub(e.firstSeen) > s.cfg.DeadGrace
}

// markDead records a node as dead whatever state it was in: liveness overrides any drain.
func (s *Server) markDead(ctx context.Context, id, reason string) {
	s.applyState(ctx, fsm.SetNodeState{ID: id, State: fsm.StateDead, Reason: reason, At: s.clock.Now().UnixNano()})
}

// changeState moves a node on from the state the leader saw it in, if it is still in that same
// stay when the entry applies; a change an operator or another event made meanwhile wins.
func (s *Server) changeState(ctx context.Context, seen fsm.Node, to fsm.NodeState, reason string) {
	s.applyState(ctx, fsm.ChangeFrom(seen, to, reason, s.clock.Now().UnixNano()))
}

func (s *Server) applyState(ctx context.Context, c fsm.SetNodeState) {
	err := s.apply(ctx, fsm.CmdSetNodeState, c)
	switch {
	case err == nil:
		s.log.Info("node state changed", "node", c.ID, "state", c.State, "reason", c.Reason)
	case errors.Is(err, context.Canceled), errors.Is(err, ErrNotLeader), errors.Is(err, fsm.ErrStale):
	default:
		s.log.Warn("node state change failed", "node", c.ID, "state", c.State, "err", err)
	}
}

// reconcilePeers records every Raft peer that gossips as a coordinator, so that `nodes` lists all
// coordinators and any of them can be found for forwarding once it leads. Peers added through
// AddPeer are recorded there already; peers bootstrapped together are recorded here.
func (s *Server) reconcilePeers(ctx context.Context, members []membership.Member) {
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	raftAddr := map[string]string{}
	for _, srv := range cf.Configuration().Servers {
		raftAddr[string(srv.ID)] = string(srv.Address)
	}
	st := s.fsm.State()
	for _, m := range members {
		ra, ok := raftAddr[m.ID]
		if !ok || m.Meta.Role != string(fsm.RoleCoordinator) || m.ID == s.cfg.NodeID {
			continue
		}
		if n, ok := st.Nodes[m.ID]; ok && n.GRPCAddr == m.Meta.GRPCAddr && n.RaftAddr == ra {
			continue
		}
		err := s.apply(ctx, fsm.CmdRegisterNode, fsm.RegisterNode{
			Node: fsm.Node{ID: m.ID, Role: fsm.RoleCoordinator, GRPCAddr: m.Meta.GRPCAddr, RaftAddr: ra, Version: m.Meta.Version},
			At:   s.clock.Now().UnixNano(),
		})
		if err != nil {
			s.log.Warn("recording coordinator failed", "peer", m.ID, "err", err)
		}
	}
}
