package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/daemon"
	"github.com/tandemserve/tandem/coordinator/membership"
	"github.com/tandemserve/tandem/engine"
	coordv1 "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// joinCluster registers a worker with the coordinators, keeps it in gossip
// and reports its engine's load, so placements can name it. The returned
// session is closed (leaving gossip at once) when the worker stops.
func joinCluster(ctx context.Context, cfg serveConfig, role, addr, kvAddr string, load func() engine.Load, log *slog.Logger) (*client.Session, *client.Client, error) {
	host, port, err := splitHostPort(cfg.GossipListen)
	if err != nil {
		return nil, nil, fmt.Errorf("--gossip-listen: %w", err)
	}
	cl, err := client.New(client.Config{Addrs: cfg.Coordinators, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sess, err := cl.Join(jctx, client.WorkerConfig{
		Node: &coordv1.NodeInfo{
			Id: addr, Role: role, GrpcAddr: addr, TransportAddr: kvAddr,
			Models: []string{modelName(cfg.Model)}, Backend: cfg.Backend,
		},
		Gossip: membership.Config{BindAddr: host, BindPort: port},
		Sample: func() *coordv1.Load {
			l := load()
			return &coordv1.Load{
				Running: int32(l.Running), Waiting: int32(l.Waiting), QueueDepth: int32(l.Waiting),
				FreeKvBlocks: int32(l.FreeBlocks), TotalKvBlocks: int32(l.TotalBlocks), BlockTokens: int32(l.BlockSize),
				TokensPerSec: l.DecodeTokensPerSec + l.PromptTokensPerSec, InFlight: int32(l.Running + l.Waiting),
				PrefixHashes: l.PrefixHashes,
			}
		},
		Logger: log,
	})
	if err != nil {
		cl.Close()
		return nil, nil, fmt.Errorf("join coordinators %v: %w", cfg.Coordinators, err)
	}
	log.Info("joined the cluster", "coordinators", cfg.Coordinators, "node", addr)
	return sess, cl, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago: the coordinator needs its addresses before it listens, to advertise
// them.
func freeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}

// startDevCoordinator runs a one-node coordinator (bootstrapped, data in a
// temporary directory removed at exit) in g until ctx ends, and waits for it
// to lead. It returns its gRPC address.
func startDevCoordinator(ctx context.Context, g *errgroup.Group, secret []byte, logLevel string, stderr io.Writer) (string, func(), error) {
	dir, err := os.MkdirTemp("", "tandem-dev-coordinator-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = freeAddr(); err != nil {
			cleanup()
			return "", nil, err
		}
	}
	getenv := func(k string) string {
		if k == "TANDEM_CLUSTER_SECRET" {
			return string(secret)
		}
		return ""
	}
	o, err := daemon.Parse([]string{"--id", "dev-coordinator", "--data-dir", dir, "--bootstrap",
		"--grpc-addr", addrs[0], "--raft-addr", addrs[1], "--gossip-addr", addrs[2], "--log-level", logLevel}, stderr, getenv)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	var lvl slog.Level
	if lvl.UnmarshalText([]byte(logLevel)) != nil {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("role", "coordinator")
	g.Go(func() error { return daemon.Start(ctx, o, log) })

	cl, err := client.New(client.Config{Addrs: []string{addrs[0]}, Logger: log})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	defer cl.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Status(sctx)
		cancel()
		if err == nil && st.GetLeaderId() != "" {
			return addrs[0], cleanup, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			cleanup()
			return "", nil, fmt.Errorf("dev coordinator did not elect itself: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
