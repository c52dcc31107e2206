// Package membership tracks which coordinators and workers are alive, using hashicorp/memberlist
// (SWIM gossip with indirect probes and suspicion).
//
// Each process runs one Agent. Gossip carries only the node's identity (Meta: role, version, gRPC
// address); memberlist's failure detector turns missed probes into leave events. memberlist calls
// its delegates from its own goroutines and they must not block, so the Agent only appends events
// to a queue there; one goroutine owned by the Agent hands them to the Handler in order. The
// coordinator leader consumes these events and records deaths and recoveries in Raft; the queue is
// unbounded, but the leader also reconciles against Members periodically, so nothing depends on
// every event being seen.
package membership

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	EventJoin EventType = iota + 1
	EventLeave
	EventUpdate
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	}
	return "unknown"
}

// Member is one live node.
type Member struct {
	ID   string
	Addr string // gossip address
	Meta Meta
}

// Event is a membership change. Meta is the zero value when the node's metadata did not decode.
type Event struct {
	Type   EventType
	Member Member
}

// Handler receives events one at a time, in order, from the Agent's goroutine.
type Handler interface {
	HandleMembership(Event)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(Event)

// HandleMembership calls f.
func (f HandlerFunc) HandleMembership(e Event) { f(e) }

var _ Handler = HandlerFunc(nil)

// Config configures an Agent.
type Config struct {
	NodeID        string
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	AdvertisePort int
	// SecretKey (16, 24 or 32 bytes) turns on AES-GCM encryption of all gossip.
	SecretKey []byte
	Meta      Meta
	// Transport replaces the UDP/TCP transport (memberlist.MockNetwork in tests).
	Transport memberlist.NodeAwareTransport
	// ProbeInterval and SuspicionMult tune failure detection; zero keeps memberlist's LAN defaults
	// (1 s probes; a dead node is declared after roughly 5 s on a small cluster).
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return fmt.Errorf("%w: empty node id", ErrConfig)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("%w: gossip key must be 16, 24 or 32 bytes, got %d", ErrConfig, len(c.SecretKey))
	}
	if _, err := EncodeMeta(c.Meta); err != nil {
		return err
	}
	return nil
}

// Agent is one node's membership in the gossip pool.
type Agent struct {
	ml      *memberlist.Memberlist
	log     *slog.Logger
	handler Handler

	mu     sync.Mutex
	queue  []Event
	closed bool
	// members mirrors memberlist's live set. It is maintained from the event callbacks, which
	// memberlist calls while holding its node lock, because reading the *Node values that
	// Members() returns races with memberlist's own updates.
	members   map[string]Member
	localAddr string
	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
}

// New starts an agent. handler may be nil when the caller only wants to be seen (workers).
func New(cfg Config, handler Handler, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	meta, _ := EncodeMeta(cfg.Meta)
	a := &Agent{
		log:     log,
		handler: handler,
		wake:    make(chan struct{}, 1),
		members: map[string]Member{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	if cfg.BindAddr != "" {
		mc.BindAddr = cfg.BindAddr
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = cfg.SecretKey
	}
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	}
	if cfg.ProbeInterval > 0 {
		mc.ProbeInterval = cfg.ProbeInterval
	}
	if cfg.ProbeTimeout > 0 {
		mc.ProbeTimeout = cfg.ProbeTimeout
	}
	if cfg.SuspicionMult > 0 {
		mc.SuspicionMult = cfg.SuspicionMult
	}
	if cfg.GossipInterval > 0 {
		mc.GossipInterval = cfg.GossipInterval
	}
	mc.Logger = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	mc.Delegate = &delegate{meta: meta}
	mc.Events = &events{a: a}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start: %w", err)
	}
	a.ml = ml
	a.localAddr = net.JoinHostPort(ml.LocalNode().Addr.String(), strconv.Itoa(int(ml.LocalNode().Port)))
	go a.pump()
	return a, nil
}

// Join contacts seeds (host:port gossip addresses); it succeeds when at least one answers.
func (a *Agent) Join(ctx context.Context, seeds []string) error {
	if len(seeds) == 0 {
		return nil
	}
	var lastErr error
	for {
		n, err := a.ml.Join(seeds)
		if n > 0 {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("membership: join %v: %w (last error: %v)", seeds, ctx.Err(), lastErr)
		case <-a.stop:
			return ErrClosed
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Members lists the nodes memberlist currently considers alive, including this one.
func (a *Agent) Members() []Member {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Member, 0, len(a.members))
	for _, m := range a.members {
		out = append(out, m)
	}
	return out
}

// LocalAddr is the address other nodes use to reach this agent's gossip.
func (a *Agent) LocalAddr() string { return a.localAddr }

// Close leaves the pool gracefully (bounded by ctx), shuts memberlist down and joins the event
// goroutine. Pending events are dropped.
func (a *Agent) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	leaveErr := a.ml.Leave(timeout)
	shutErr := a.ml.Shutdown()
	close(a.stop)
	<-a.done
	if shutErr != nil {
		return fmt.Errorf("membership: shutdown: %w", shutErr)
	}
	if leaveErr != nil {
		a.log.Debug("leave did not complete", "err", leaveErr)
	}
	return nil
}

// Kill stops gossip abruptly, without telling the others: tests use it to simulate a crash.
func (a *Agent) Kill() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	err := a.ml.Shutdown()
	close(a.stop)
	<-a.done
	return err
}

func (a *Agent) push(e Event) {
	a.mu.Lock()
	if e.Type == EventLeave {
		delete(a.members, e.Member.ID)
	} else {
		a.members[e.Member.ID] = e.Member
	}
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.queue = append(a.queue, e)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) pump() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		case <-a.wake:
		}
		a.mu.Lock()
		batch := a.queue
		a.queue = nil
		a.mu.Unlock()
		for _, e := range batch {
			if a.handler != nil {
				a.handler.HandleMembership(e)
			}
		}
	}
}

func toMember(n *memberlist.Node, log *slog.Logger) Member {
	m := Member{ID: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		log.Warn("ignoring bad gossip metadata", "node", n.Name, "err", err)
	} else {
		m.Meta = meta
	}
	return m
}

// delegate serves our metadata. Gossip user messages are not used.
type delegate struct{ meta []byte }

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil // EncodeMeta already refused this; never let memberlist panic
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events forwards memberlist notifications into the agent's queue without blocking.
type events struct{ a *Agent }

var _ memberlist.EventDelegate = (*events)(nil)

func (e *events) NotifyJoin(n *memberlist.Node) {
	e.a.push(Event{Type: EventJoin, Member: toMember(n, e.a.log)})
}
func (e *events) NotifyLeave(n *memberlist.Node) {
	e.a.push(Event{Type: EventLeave, Member: toMember(n, e.a.log)})
}
func (e *events) NotifyUpdate(n *memberlist.Node) {
	e.a.push(Event{Type: EventUpdate, Member: toMember(n, e.a.log)})
}
