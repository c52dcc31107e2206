package coordinator

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/coordinator/token"
)

// RaftTiming holds the Raft timeouts. The defaults are tuned so that a new leader is elected and
// placing within about 1.5 s of the old one dying (see docs): followers notice a silent leader
// after HeartbeatTimeout (randomised between 1x and 2x), then win an election within
// ElectionTimeout, and the new leader's loop starts after one Barrier.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	// TrailingLogs is how many applied entries survive a snapshot (0: raft's default, 10240).
	TrailingLogs uint64
}

// Config configures one coordinator.
type Config struct {
	NodeID string
	// DataDir holds raft.db (log and stable store) and snapshots/. Empty only with in-memory Deps.
	DataDir string
	// RaftBind is the host:port Raft listens on; RaftAdvertise what peers dial (defaults to bind).
	RaftBind      string
	RaftAdvertise string
	// GRPCAdvertise is the address of this coordinator's gRPC API, recorded in the replicated
	// state so followers can forward to the leader.
	GRPCAdvertise string
	// Bootstrap makes this node the first voter of a new cluster (ignored when state exists).
	Bootstrap bool
	// BootstrapServers, with Bootstrap, starts the cluster with these voters instead of this node
	// alone; every listed node must bootstrap with the same list.
	BootstrapServers []raft.Server
	Raft             RaftTiming
	// RaftTLS turns on mutual TLS for Raft traffic (server side must require client certs).
	RaftTLS *tls.Config
	Gossip  membership.Config
	// ClusterSecret signs transfer tokens; every coordinator and worker shares it.
	ClusterSecret []byte
	// TransferTTL is how long a placement's token stays valid.
	TransferTTL time.Duration
	// LoadInterval is how often workers are told to report load; LoadTTL after the last report (or
	// after the leader first saw the node) a silent worker gets no new placements.
	LoadInterval time.Duration
	LoadTTL      time.Duration
	// DeadGrace is how long a registered node may be absent from gossip before it is declared
	// dead (it covers the gap between gRPC registration and the first gossip join).
	DeadGrace time.Duration
	// SuspectTTL is how long a node reported failed by a client is skipped, unless it reports load.
	SuspectTTL time.Duration
	// ReconcileInterval is the period of the leader's liveness and drain reconciliation.
	ReconcileInterval time.Duration
	// PlaceCacheSize bounds the idempotency cache of recent placements by request id.
	PlaceCacheSize int
	// ApplyTimeout bounds one Raft apply.
	ApplyTimeout time.Duration
	Version      string
}

// DefaultConfig returns production defaults. Callers set NodeID, DataDir, addresses and secrets.
func DefaultConfig() Config {
	return Config{
		Raft: RaftTiming{
			HeartbeatTimeout:   500 * time.Millisecond,
			ElectionTimeout:    500 * time.Millisecond,
			LeaderLeaseTimeout: 250 * time.Millisecond,
			CommitTimeout:      20 * time.Millisecond,
			SnapshotInterval:   30 * time.Second,
			SnapshotThreshold:  1024,
		},
		TransferTTL:       30 * time.Second,
		LoadInterval:      500 * time.Millisecond,
		LoadTTL:           3 * time.Second,
		DeadGrace:         5 * time.Second,
		SuspectTTL:        5 * time.Second,
		ReconcileInterval: 500 * time.Millisecond,
		PlaceCacheSize:    65536,
		ApplyTimeout:      5 * time.Second,
		Version:           "dev",
	}
}

// Validate checks fields and their combinations.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: empty node id", ErrConfig)
	case c.GRPCAdvertise == "":
		return fmt.Errorf("%w: empty grpc advertise address", ErrConfig)
	case len(c.ClusterSecret) < token.MinSecretLen:
		return fmt.Errorf("%w: cluster secret must be at least %d bytes", ErrConfig, token.MinSecretLen)
	case c.TransferTTL <= 0 || c.LoadInterval <= 0 || c.LoadTTL <= 0 || c.DeadGrace <= 0 ||
		c.SuspectTTL <= 0 || c.ReconcileInterval <= 0 || c.ApplyTimeout <= 0:
		return fmt.Errorf("%w: every interval and timeout must be positive", ErrConfig)
	case c.LoadTTL < 2*c.LoadInterval:
		return fmt.Errorf("%w: load ttl %s must cover at least two load intervals (%s)", ErrConfig, c.LoadTTL, c.LoadInterval)
	case c.PlaceCacheSize <= 0:
		return fmt.Errorf("%w: place cache size must be positive", ErrConfig)
	case c.Raft.LeaderLeaseTimeout > c.Raft.HeartbeatTimeout:
		return fmt.Errorf("%w: leader lease timeout must not exceed heartbeat timeout", ErrConfig)
	}
	return nil
}

func (c *Config) raftConfig(log *slog.Logger) (*raft.Config, error) {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.Raft.HeartbeatTimeout
	rc.ElectionTimeout = c.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = c.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = c.Raft.CommitTimeout
	rc.SnapshotInterval = c.Raft.SnapshotInterval
	rc.SnapshotThreshold = c.Raft.SnapshotThreshold
	if c.Raft.TrailingLogs > 0 {
		rc.TrailingLogs = c.Raft.TrailingLogs
	}
	rc.Logger = newHCLogger("raft", log)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%w: raft: %w", ErrConfig, err)
	}
	return rc, nil
}

// Deps are the collaborators a Server uses; zero values get production defaults.
type Deps struct {
	Logger   *slog.Logger
	Registry prometheus.Registerer
	Clock    Clock
	// Transport, LogStore, StableStore and SnapshotStore replace the on-disk Raft plumbing (tests
	// use raft.NewInmemTransport and raft.NewInmemStore). Set all four or none.
	Transport     raft.Transport
	LogStore      raft.LogStore
	StableStore   raft.StableStore
	SnapshotStore raft.SnapshotStore
}
