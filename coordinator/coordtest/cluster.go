// Package coordtest builds in-process coordinator clusters for tests: Raft on in-memory
// transports, gossip on a lossy in-memory network, and each coordinator's gRPC API on a loopback
// port. Helpers partition, heal, kill and restart nodes and run fake workers, so tests read as
// scenarios.
package coordtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/api"
	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Secret returns the cluster secret test clusters use.
func Secret() []byte { return []byte("coordtest-cluster-secret-0123456789") }

// FastConfig returns a coordinator config with timeouts short enough for tests (150 ms Raft,
// 100 ms gossip probes) yet long enough that a CPU-starved CI machine does not see spurious
// elections or deaths.
func FastConfig(id string) coordinator.Config {
	c := coordinator.DefaultConfig()
	c.NodeID = id
	c.ClusterSecret = Secret()
	c.Raft = coordinator.RaftTiming{
		HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		SnapshotInterval: time.Hour, SnapshotThreshold: 1 << 20,
	}
	c.LoadInterval = 50 * time.Millisecond
	c.LoadTTL = 2 * time.Second
	c.DeadGrace = 500 * time.Millisecond
	c.SuspectTTL = time.Second
	c.ReconcileInterval = 50 * time.Millisecond
	c.ApplyTimeout = 2 * time.Second
	c.Gossip = FastGossip()
	return c
}

// FastGossip returns membership timings for tests.
func FastGossip() membership.Config {
	return membership.Config{ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, SuspicionMult: 2, GossipInterval: 20 * time.Millisecond}
}

// Node is one coordinator of a test cluster.
type Node struct {
	ID        string
	Server    *coordinator.Server
	GRPCAddr  string
	raftAddr  raft.ServerAddress
	transport *raft.InmemTransport
	store     *raft.InmemStore
	snaps     *raft.InmemSnapshotStore
	grpc      *grpc.Server
	svc       *api.Service
	served    chan struct{}
	dead      bool
}

// Cluster is a set of coordinators plus fake workers.
type Cluster struct {
	t       testing.TB
	Net     *membership.TestNetwork
	Nodes   []*Node
	mu      sync.Mutex
	workers []*Worker
	// Configure, if set before adding nodes, adjusts each node's config.
	Configure func(*coordinator.Config)
	// AdminToken, if set before adding nodes, protects the Admin API; Client sends it.
	AdminToken string
}

// MakeCluster starts n voters bootstrapped together and waits for a leader.
func MakeCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	return MakeClusterWith(t, n, nil)
}

// MakeClusterWith is MakeCluster with a callback that adjusts every node's config.
func MakeClusterWith(t testing.TB, n int, configure func(*coordinator.Config)) *Cluster {
	t.Helper()
	return MakeClusterOpts(t, Options{Voters: n, Configure: configure})
}

// Options configure a test cluster.
type Options struct {
	Voters     int
	Configure  func(*coordinator.Config)
	AdminToken string // required on Admin calls when set
}

// MakeClusterOpts starts a cluster from opts and waits for a leader.
func MakeClusterOpts(t testing.TB, opts Options) *Cluster {
	t.Helper()
	n := opts.Voters
	c := NewCluster(t)
	c.Configure = opts.Configure
	c.AdminToken = opts.AdminToken
	var servers []raft.Server
	for i := range n {
		nd := c.newNode(fmt.Sprintf("c%d", i))
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nd.ID), Address: nd.raftAddr})
	}
	for _, nd := range c.Nodes {
		c.start(nd, servers)
	}
	c.WaitLeader(t)
	return c
}

// NewCluster returns an empty cluster whose teardown is registered with t.
func NewCluster(t testing.TB) *Cluster {
	c := &Cluster{t: t, Net: membership.NewTestNetwork()}
	t.Cleanup(c.Close)
	return c
}

func (c *Cluster) newNode(id string) *Node {
	addr, tr := raft.NewInmemTransport("")
	nd := &Node{ID: id, raftAddr: addr, transport: tr, store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
	for _, other := range c.Nodes {
		tr.Connect(other.raftAddr, other.transport)
		other.transport.Connect(addr, tr)
	}
	c.Nodes = append(c.Nodes, nd)
	return nd
}

func (c *Cluster) start(nd *Node, bootstrap []raft.Server) {
	c.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := FastConfig(nd.ID)
	cfg.GRPCAdvertise = lis.Addr().String()
	cfg.Bootstrap = len(bootstrap) > 0
	cfg.BootstrapServers = bootstrap
	cfg.Gossip.Transport = c.Net.NewTransport(nd.ID)
	if c.Configure != nil {
		c.Configure(&cfg)
	}
	srv, err := coordinator.New(cfg, coordinator.Deps{
		Logger:    testLogger(c.t, nd.ID),
		Transport: nd.transport, LogStore: nd.store, StableStore: nd.store, SnapshotStore: nd.snaps,
	})
	if err != nil {
		lis.Close()
		c.t.Fatal(err)
	}
	if len(c.Nodes) > 1 {
		for _, other := range c.Nodes {
			if other != nd && other.Server != nil && !other.dead {
				if err := srv.JoinGossip(context.Background(), []string{other.Server.GossipAddr()}); err != nil {
					c.t.Fatal(err)
				}
				break
			}
		}
	}
	svc := api.New(srv, api.Config{Logger: testLogger(c.t, nd.ID), AdminToken: c.AdminToken})
	gs := grpc.NewServer(svc.ServerOptions()...)
	svc.RegisterServices(gs)
	nd.Server, nd.GRPCAddr, nd.grpc, nd.svc, nd.dead = srv, cfg.GRPCAdvertise, gs, svc, false
	nd.served = make(chan struct{})
	go func() {
		defer close(nd.served)
		_ = gs.Serve(lis)
	}()
}

// AddVoter starts a new empty coordinator and adds it through the leader's AddPeer.
func (c *Cluster) AddVoter(t testing.TB, id string) *Node {
	t.Helper()
	nd := c.newNode(id)
	c.start(nd, nil)
	cl := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.AddPeer(ctx, peerRequest(nd)); err != nil {
		t.Fatalf("add peer %s: %v", id, err)
	}
	return nd
}

// WaitLeader waits for an established leader among live nodes and returns it.
func (c *Cluster) WaitLeader(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	Eventually(t, 10*time.Second, "an established leader", func() bool {
		leader = c.Leader()
		return leader != nil
	})
	return leader
}

// Leader returns the established leader among live nodes, or nil.
func (c *Cluster) Leader() *Node {
	for _, nd := range c.Nodes {
		if !nd.dead && nd.Server != nil && nd.Server.IsLeader() {
			return nd
		}
	}
	return nil
}

// Followers returns the live nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, nd := range c.Nodes {
		if !nd.dead && nd.Server != nil && !nd.Server.IsLeader() {
			out = append(out, nd)
		}
	}
	return out
}

// Partition isolates the named coordinators (Raft and gossip) from everyone else.
func (c *Cluster) Partition(ids ...string) {
	c.Net.Partition(ids...)
	in := map[string]bool{}
	for _, id := range ids {
		in[id] = true
	}
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if in[a.ID] != in[b.ID] {
				a.transport.Disconnect(b.raftAddr)
			}
		}
	}
}

// Heal reconnects everything.
func (c *Cluster) Heal() {
	c.Net.Heal()
	for _, a := range c.Nodes {
		for _, b := range c.Nodes {
			if a != b {
				a.transport.Connect(b.raftAddr, b.transport)
			}
		}
	}
}

// Kill crashes a coordinator: no graceful gossip leave, Raft stops, gRPC stops.
func (c *Cluster) Kill(nd *Node) {
	nd.grpc.Stop()
	<-nd.served
	nd.Server.Kill()
	_ = nd.svc.Close()
	for _, other := range c.Nodes {
		other.transport.Disconnect(nd.raftAddr)
	}
	nd.dead = true
}

// Restart brings a killed node back with its Raft log, stable store and snapshots (the in-memory
// equivalent of restarting with the same data dir).
func (c *Cluster) Restart(nd *Node) {
	c.t.Helper()
	addr, tr := raft.NewInmemTransport(nd.raftAddr)
	nd.raftAddr, nd.transport = addr, tr
	for _, other := range c.Nodes {
		if other != nd {
			tr.Connect(other.raftAddr, other.transport)
			other.transport.Connect(addr, tr)
		}
	}
	c.start(nd, nil)
}

// Addrs lists the gRPC addresses of live coordinators.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, nd := range c.Nodes {
		if !nd.dead && nd.Server != nil {
			addrs = append(addrs, nd.GRPCAddr)
		}
	}
	return addrs
}

// Client returns a client that knows every live coordinator's gRPC address.
func (c *Cluster) Client(t testing.TB) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Addrs: c.Addrs(), Token: c.AdminToken, Logger: testLogger(t, "client")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Close stops workers and coordinators.
func (c *Cluster) Close() {
	c.mu.Lock()
	workers := c.workers
	c.workers = nil
	c.mu.Unlock()
	for _, w := range workers {
		w.Kill()
	}
	for _, nd := range c.Nodes {
		if !nd.dead && nd.Server != nil {
			nd.grpc.Stop()
			<-nd.served
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = nd.Server.Close(ctx)
			cancel()
			_ = nd.svc.Close()
			nd.dead = true
		}
	}
}

// Eventually polls cond until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger(t testing.TB, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
}

// tWriter sends log lines to t.Log so passing tests stay quiet.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func peerRequest(nd *Node) *pb.AddPeerRequest {
	return &pb.AddPeerRequest{Id: nd.ID, RaftAddr: string(nd.raftAddr), GrpcAddr: nd.GRPCAddr}
}
