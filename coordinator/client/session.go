package client

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// WorkerConfig describes a worker or gateway joining the cluster.
type WorkerConfig struct {
	Node *pb.NodeInfo
	// Gossip is the membership config; NodeID, Meta and the seeds are filled in from Node and
	// the registration, so usually only the bind address, port and key need setting.
	Gossip membership.Config
	// Sample returns the current load; it is called from the session's goroutine every load
	// interval. Nil for gateways, which report no load.
	Sample func() *pb.Load
	Logger *slog.Logger
}

// Session is a registered node: it stays in gossip and reports load until Close.
type Session struct {
	c      *Client
	agent  *membership.Agent
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	state string
}

// Join registers the node, joins gossip through the seeds the leader returns, and starts the
// load reporter. The node is placeable once Join returns.
func (c *Client) Join(ctx context.Context, cfg WorkerConfig) (*Session, error) {
	if cfg.Node == nil || cfg.Node.GetId() == "" {
		return nil, fmt.Errorf("%w: worker needs a node id", ErrConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = c.log
	}
	resp, err := c.Register(ctx, cfg.Node)
	if err != nil {
		return nil, err
	}
	gc := cfg.Gossip
	gc.NodeID = cfg.Node.GetId()
	gc.Meta = membership.Meta{Role: cfg.Node.GetRole(), Version: cfg.Node.GetVersion(), GRPCAddr: cfg.Node.GetGrpcAddr()}
	agent, err := membership.New(gc, nil, log.With("component", "gossip"))
	if err != nil {
		return nil, err
	}
	if err := agent.Join(ctx, resp.GetGossipSeeds()); err != nil {
		_ = agent.Kill()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s := &Session{c: c, agent: agent, cancel: cancel, done: make(chan struct{}), state: "active"}
	interval := time.Duration(resp.GetLoadIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	go func() {
		defer close(s.done)
		if cfg.Sample == nil {
			<-rctx.Done()
			return
		}
		_ = c.RunLoadReporter(rctx, interval, func() *pb.Load {
			l := cfg.Sample()
			l.NodeId = cfg.Node.GetId()
			return l
		}, s.setState)
	}()
	return s, nil
}

func (s *Session) setState(st string) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
}

// State is the node's replicated state as of the last load report: "active", "draining" (finish
// in-flight work, accept nothing new), "drained" or "dead".
func (s *Session) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close stops reporting and leaves gossip gracefully, so the leader records the departure at
// once instead of waiting for failure detection.
func (s *Session) Close(ctx context.Context) error {
	s.cancel()
	<-s.done
	return s.agent.Close(ctx)
}
