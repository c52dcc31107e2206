package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/coordinator/placement"
)

// Server is one coordinator. Its exported methods may be called concurrently; those that need
// the leader return ErrNotLeader elsewhere (the gRPC layer forwards them).
type Server struct {
	cfg     Config
	log     *slog.Logger
	clock   Clock
	metrics *metrics

	fsm      *fsm.FSM
	raft     *raft.Raft
	plumbing *raftPlumbing
	gossip   *membership.Agent
	registry *placement.Registry

	loads *loads
	// pipeline is the placement policy built from the replicated spec; policyVersion is the log
	// index of the spec it was built from.
	pipeline      atomic.Pointer[placement.Pipeline]
	policyVersion atomic.Uint64
	// leaderTerm is the term in which this node established leadership (after its barrier), or
	// 0 when it is not an established leader. Placement reads it as the fencing token.
	leaderTerm atomic.Uint64
	cache      *placeCache
	index      atomic.Pointer[workerIndex]
	candBufs   sync.Pool // *candidateBuf

	memberEvents chan membership.Event
	stop         chan struct{}
	wg           sync.WaitGroup
	closeOnce    sync.Once
}

// New builds and starts a coordinator: Raft (setupRaft), gossip (setupGossip) and the loop that
// follows leadership. A node with Bootstrap set and no existing state bootstraps a one-voter
// cluster; other nodes wait to be added by the leader (AddPeer).
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = SystemClock{}
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	m, err := newMetrics(deps.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:          cfg,
		log:          deps.Logger.With("component", "coordinator", "node", cfg.NodeID),
		clock:        deps.Clock,
		metrics:      m,
		registry:     placement.NewRegistry(),
		loads:        newLoads(deps.Clock, cfg.LoadTTL),
		cache:        newPlaceCache(cfg.PlaceCacheSize),
		memberEvents: make(chan membership.Event, 1024),
		stop:         make(chan struct{}),
	}
	def, err := s.registry.Build(placement.DefaultSpec())
	if err != nil {
		return nil, err
	}
	s.pipeline.Store(def)
	s.candBufs.New = func() any { return &candidateBuf{} }
	s.fsm = fsm.New(s.log, s.onStateChange)
	if err := s.setupRaft(&deps); err != nil {
		return nil, err
	}
	if err := s.setupGossip(); err != nil {
		s.shutdownRaft()
		return nil, err
	}
	s.wg.Add(2)
	go s.monitorLeadership()
	go s.metricsLoop()
	return s, nil
}

func (s *Server) setupRaft(deps *Deps) error {
	rc, err := s.cfg.raftConfig(s.log)
	if err != nil {
		return err
	}
	p, err := setupRaftPlumbing(&s.cfg, deps, s.log)
	if err != nil {
		return err
	}
	s.plumbing = p
	existing, err := raft.HasExistingState(p.logs, p.stable, p.snaps)
	if err != nil {
		p.close()
		return fmt.Errorf("coordinator: read raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, p.logs, p.stable, p.snaps, p.transport)
	if err != nil {
		p.close()
		return fmt.Errorf("coordinator: start raft: %w", err)
	}
	s.raft = r
	if s.cfg.Bootstrap && !existing {
		boot := raft.Configuration{Servers: s.cfg.BootstrapServers}
		if len(boot.Servers) == 0 {
			boot.Servers = []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(s.cfg.NodeID), Address: p.transport.LocalAddr()}}
		}
		if err := r.BootstrapCluster(boot).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			s.shutdownRaft()
			return fmt.Errorf("coordinator: bootstrap: %w", err)
		}
	}
	s.log.Info("raft started", "addr", p.transport.LocalAddr(), "existing_state", existing, "bootstrap", s.cfg.Bootstrap && !existing)
	return nil
}

func (s *Server) setupGossip() error {
	gc := s.cfg.Gossip
	gc.NodeID = s.cfg.NodeID
	gc.Meta = membership.Meta{Role: string(fsm.RoleCoordinator), Version: s.cfg.Version, GRPCAddr: s.cfg.GRPCAdvertise}
	a, err := membership.New(gc, s, s.log.With("component", "gossip"))
	if err != nil {
		return err
	}
	s.gossip = a
	return nil
}

func (s *Server) shutdownRaft() {
	if s.raft != nil {
		if err := s.raft.Shutdown().Error(); err != nil {
			s.log.Warn("raft shutdown", "err", err)
		}
	}
	if s.plumbing != nil {
		s.plumbing.close()
	}
}

// HandleMembership implements membership.Handler. It must not block the gossip agent: events are
// queued for the leader loop and dropped when the queue is full or no leader loop runs, which is
// safe because the leader reconciles against the full member list every ReconcileInterval.
func (s *Server) HandleMembership(e membership.Event) {
	if s.leaderTerm.Load() == 0 {
		return
	}
	select {
	case s.memberEvents <- e:
	default:
		s.log.Warn("membership event queue full; reconciliation will catch up", "event", e.Type, "node", e.Member.ID)
	}
}

var _ membership.Handler = (*Server)(nil)

// JoinGossip joins the gossip pool through seeds (gossip addresses of existing members).
func (s *Server) JoinGossip(ctx context.Context, seeds []string) error {
	return s.gossip.Join(ctx, seeds)
}

// GossipAddr is this coordinator's gossip address.
func (s *Server) GossipAddr() string { return s.gossip.LocalAddr() }

// RaftAddr is the address peers use for this node's Raft traffic.
func (s *Server) RaftAddr() string { return string(s.plumbing.transport.LocalAddr()) }

// ID is the node id.
func (s *Server) ID() string { return s.cfg.NodeID }

// State returns the replicated state as this node last applied it (read-only).
func (s *Server) State() *fsm.State { return s.fsm.State() }

// IsLeader reports whether this node is an established leader (its leader loop is running).
func (s *Server) IsLeader() bool { return s.leaderTerm.Load() != 0 }

// LeaderGRPCAddr returns the gRPC address of the current leader, as recorded in the replicated
// state, so followers can forward leader-only calls.
func (s *Server) LeaderGRPCAddr() (string, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", ErrNoLeader
	}
	if string(id) == s.cfg.NodeID {
		// Raft elected us but the leader loop has not finished establishing: forwarding to
		// ourselves would only bounce. The caller retries in a moment.
		return "", fmt.Errorf("%w: this node was just elected and is not ready yet", ErrNoLeader)
	}
	n, ok := s.fsm.State().Nodes[string(id)]
	if !ok || n.GRPCAddr == "" {
		// The leader writes its own record right after election; until then it is not ready.
		return "", fmt.Errorf("%w: leader %s has not published its address yet", ErrNoLeader, id)
	}
	return n.GRPCAddr, nil
}

// Close leaves gossip, stops the loops and shuts Raft down. Safe to call more than once.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		err = s.gossip.Close(ctx)
		s.shutdownRaft()
	})
	return err
}

// Kill stops the node abruptly, without leaving gossip gracefully (tests: a crash).
func (s *Server) Kill() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		_ = s.gossip.Kill()
		s.shutdownRaft()
	})
}

// apply proposes one command and waits for it to be applied, returning the FSM's verdict.
func (s *Server) apply(ctx context.Context, t fsm.CommandType, payload any) error {
	b, err := fsm.Encode(t, payload)
	if err != nil {
		return err
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	f := s.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return fmt.Errorf("%w: %w", ErrNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return ErrClosed
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return fmt.Errorf("coordinator: apply: %w", context.DeadlineExceeded)
		}
		return fmt.Errorf("coordinator: apply: %w", err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

// onStateChange runs on raft's apply goroutine after every change: rebuild the placement pipeline
// when the policy changed. It must not block.
func (s *Server) onStateChange(st *fsm.State) {
	if len(st.Policy.Spec) > 0 && st.Policy.Version != s.policyVersion.Load() {
		spec, err := placement.ParseSpec(st.Policy.Spec)
		if err == nil {
			var p *placement.Pipeline
			if p, err = s.registry.Build(spec); err == nil {
				s.pipeline.Store(p)
				s.policyVersion.Store(st.Policy.Version)
			}
		}
		if err != nil {
			// The leader validated it before proposing; a failure here means this binary lacks a
			// plugin the leader has. Keep placing with the previous policy and say so.
			s.log.Error("replicated placement policy does not build here; keeping previous policy", "err", err)
		}
	}
}

func (s *Server) metricsLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		s.metrics.observeRaft(s.raft)
		s.metrics.observeState(s.fsm.State())
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}
