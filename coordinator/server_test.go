package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/coordinator/mtls"
	"github.com/tandemserve/tandem/coordinator/placement"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func validConfig() Config {
	c := DefaultConfig()
	c.NodeID, c.GRPCAdvertise, c.ClusterSecret = "n", "127.0.0.1:1", []byte("0123456789abcdef0123456789abcdef")
	return c
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no id", func(c *Config) { c.NodeID = "" }, false},
		{"no grpc", func(c *Config) { c.GRPCAdvertise = "" }, false},
		{"short secret", func(c *Config) { c.ClusterSecret = []byte("short") }, false},
		{"zero ttl", func(c *Config) { c.TransferTTL = 0 }, false},
		{"load ttl below two intervals", func(c *Config) { c.LoadTTL = c.LoadInterval }, false},
		{"lease above heartbeat", func(c *Config) { c.Raft.LeaderLeaseTimeout = 2 * c.Raft.HeartbeatTimeout }, false},
		{"no cache", func(c *Config) { c.PlaceCacheSize = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mod(&c)
			err := c.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v is not ErrConfig", err)
			}
		})
	}
}

func TestLoads(t *testing.T) {
	clk := NewFakeClock(time.Unix(1000, 0))
	l := newLoads(clk, 3*time.Second)
	var c placement.Candidate
	if !l.candidate("w", &c) {
		t.Fatal("a newly seen worker must get LoadTTL of grace")
	}
	clk.Advance(4 * time.Second)
	if l.candidate("w", &c) {
		t.Fatal("a worker silent past LoadTTL must not be a candidate")
	}
	l.report(&pb.Load{NodeId: "w", QueueDepth: 1, FreeKvBlocks: 100, TotalKvBlocks: 100, BlockTokens: 16, PrefixHashes: []uint64{7}})
	if !l.candidate("w", &c) || c.Load.QueueDepth != 1 || !c.Prefix.Contains(7) {
		t.Fatalf("after report: %+v", c)
	}
	l.charge("w", 10)
	l.charge("w", 10)
	c = placement.Candidate{}
	l.candidate("w", &c)
	if d := cmp.Diff(placement.Load{QueueDepth: 3, FreeKVBlocks: 80, TotalKVBlocks: 100, BlockTokens: 16}, c.Load); d != "" {
		t.Errorf("charged load (-want +got):\n%s", d)
	}
	l.suspect("w", time.Second)
	if l.candidate("w", &c) {
		t.Fatal("suspected worker is a candidate")
	}
	l.report(&pb.Load{NodeId: "w", FreeKvBlocks: 100, TotalKvBlocks: 100})
	if !l.candidate("w", &c) || c.Load.QueueDepth != 0 {
		t.Fatalf("a report must clear suspicion and charges: %+v", c.Load)
	}
	since := clk.Now()
	if !l.idle("w", since) {
		t.Fatal("idle worker reported busy")
	}
	clk.Advance(time.Millisecond)
	if l.idle("w", clk.Now()) {
		t.Fatal("a report older than the drain must not count as idle")
	}
	l.retain(func(id string) bool { return id != "w" })
	if snap, _ := l.snapshot("w"); snap != nil {
		t.Fatal("retain kept a removed worker")
	}
}

func TestPlaceCache(t *testing.T) {
	c := newPlaceCache(2)
	a := c.put("a", &pb.Placement{TransferId: "1"})
	if got := c.put("a", &pb.Placement{TransferId: "2"}); got.GetTransferId() != "1" || a.GetTransferId() != "1" {
		t.Fatalf("second put for the same key returned %q, want the first placement", got.GetTransferId())
	}
	c.put("b", &pb.Placement{TransferId: "3"})
	c.put("c", &pb.Placement{TransferId: "4"})
	if _, ok := c.get("a"); ok {
		t.Fatal("oldest entry not evicted")
	}
	if p, ok := c.get("c"); !ok || p.GetTransferId() != "4" {
		t.Fatal("newest entry missing")
	}
	c.reset()
	if _, ok := c.get("c"); ok {
		t.Fatal("reset kept entries")
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// diskNode starts a coordinator with boltdb and file snapshots in dir and Raft on loopback TCP.
func diskNode(t *testing.T, net *membership.TestNetwork, id, dir string, boot bool, raftTLS *tls.Config) *Server {
	t.Helper()
	c := validConfig()
	c.NodeID, c.DataDir, c.RaftBind, c.Bootstrap, c.RaftTLS = id, dir, "127.0.0.1:0", boot, raftTLS
	// Production Raft timings: a two-voter group on a starved CI machine loses leadership with
	// anything much shorter.
	c.Gossip.Transport = net.NewTransport(id)
	s, err := New(c, Deps{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitLeader(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDurableRestart checks the on-disk path: the log and stable store in raft.db and file
// snapshots survive a restart with the same data dir.
func TestDurableRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := diskNode(t, membership.NewTestNetwork(), "n", dir, true, nil)
	waitLeader(t, s)
	if err := s.SetModel(ctx, &pb.Model{Id: "before-snapshot"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SnapshotSave(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.SetModel(ctx, &pb.Model{Id: "after-snapshot"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin")); len(m) != 1 {
		t.Fatalf("snapshot files: %v", m)
	}
	s2 := diskNode(t, membership.NewTestNetwork(), "n", dir, true, nil)
	defer s2.Close(ctx)
	waitLeader(t, s2)
	got := s2.Models(ctx)
	if len(got.GetModels()) != 2 {
		t.Fatalf("after restart: %v", got)
	}
}

// TestRaftOverMutualTLS runs two voters whose Raft traffic is TLS with client certificates, and
// checks that a peer without a certificate cannot even complete a handshake.
func TestRaftOverMutualTLS(t *testing.T) {
	files, err := mtls.WriteTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, _, err := mtls.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gnet := membership.NewTestNetwork()
	a := diskNode(t, gnet, "a", t.TempDir(), true, serverTLS)
	defer a.Close(ctx)
	waitLeader(t, a)
	b := diskNode(t, gnet, "b", t.TempDir(), false, serverTLS)
	defer b.Close(ctx)
	if _, err := a.AddPeer(ctx, &pb.AddPeerRequest{Id: "b", RaftAddr: b.RaftAddr(), GrpcAddr: "b:1"}); err != nil {
		t.Fatal(err)
	}
	// Whichever node leads (leadership may move once the second voter joins) takes the write.
	deadline0 := time.Now().Add(10 * time.Second)
	for {
		var err error = ErrNotLeader
		for _, s := range []*Server{a, b} {
			if s.IsLeader() {
				err = s.SetModel(ctx, &pb.Model{Id: "m"})
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNotLeader) || time.Now().After(deadline0) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(b.State().Models) == 0 || len(a.State().Models) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the write did not replicate over TLS")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// No client certificate: the server refuses the handshake.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", a.RaftAddr(),
		&tls.Config{RootCAs: serverTLS.RootCAs, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err = conn.Read(make([]byte, 1)) // TLS 1.3 reports the client-cert failure on first read
		conn.Close()
	}
	if err == nil {
		t.Fatal("raft accepted a connection without a client certificate")
	}
}
