// Package daemon runs one coordinator process: it parses the command line, starts the Raft server
// (package coordinator), serves the gRPC API (package api), joins an existing cluster when asked,
// and shuts everything down in order when its context ends. `tandem coordinator` is a thin
// wrapper around Run.
package daemon

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/api"
	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/mtls"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// seedsFile remembers coordinator gossip addresses, so a restarted node rejoins gossip even when
// its command line has no --join (the bootstrap node).
const seedsFile = "gossip-seeds.json"

// Run parses args and runs a coordinator until ctx ends.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := Parse(args, stderr, os.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: parseLevel(o.LogLevel)}))
	return Start(ctx, o, log)
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Start runs a coordinator from parsed options until ctx ends.
func Start(ctx context.Context, o *Options, log *slog.Logger) error {
	var serverTLS, clientTLS *tls.Config
	if o.TLS.Enabled() {
		var err error
		if serverTLS, clientTLS, err = mtls.Load(o.TLS); err != nil {
			return err
		}
		o.Config.RaftTLS = serverTLS
	}
	if o.AdminToken == "" && serverTLS == nil {
		log.Warn("no admin token and no TLS: the admin API is open to anyone who can reach it")
	}
	lis, err := net.Listen("tcp", o.GRPCListen)
	if err != nil {
		return fmt.Errorf("coordinator: grpc listen: %w", err)
	}
	defer lis.Close()
	reg := prometheus.NewRegistry()
	srv, err := coordinator.New(o.Config, coordinator.Deps{Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Close(cctx); err != nil {
			log.Warn("coordinator close", "err", err)
		}
	}()

	dialCreds := insecure.NewCredentials()
	var serverOpts []grpc.ServerOption
	if serverTLS != nil {
		dialCreds = credentials.NewTLS(clientTLS)
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	svc := api.New(srv, api.Config{
		AdminToken: o.AdminToken, RequireClientCert: serverTLS != nil,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(dialCreds)}, Logger: log,
	})
	defer svc.Close()
	gs := grpc.NewServer(append(serverOpts, svc.ServerOptions()...)...)
	svc.RegisterServices(gs)
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	defer func() {
		gs.GracefulStop()
		<-serveErr
	}()

	var metricsSrv *http.Server
	metricsErr := make(chan error, 1)
	if o.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Addr: o.MetricsListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { metricsErr <- metricsSrv.ListenAndServe() }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = metricsSrv.Shutdown(sctx)
			<-metricsErr
		}()
	}

	log.Info("coordinator running", "id", o.Config.NodeID, "grpc", o.Config.GRPCAdvertise, "raft", srv.RaftAddr(), "gossip", srv.GossipAddr())
	bg, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	joined := make(chan error, 1)
	go func() { joined <- join(bg, o, srv, clientTLS, log) }()
	seedsDone := make(chan struct{})
	go func() {
		defer close(seedsDone)
		rememberSeeds(bg, filepath.Join(o.Config.DataDir, seedsFile), srv, log)
	}()
	defer func() {
		cancelBG()
		<-seedsDone
	}()

	var runErr error
	joinedCh := joined
	for runErr == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case err := <-serveErr:
			serveErr <- err // the deferred stop reads it
			runErr = fmt.Errorf("coordinator: grpc server: %w", err)
		case err := <-metricsErr:
			metricsErr <- err // the deferred shutdown reads it
			runErr = fmt.Errorf("coordinator: metrics server: %w", err)
		case err := <-joinedCh:
			joinedCh = nil
			runErr = err
		}
	}
	log.Info("coordinator stopping", "err", runErr)
	cancelBG()
	if joinedCh != nil {
		<-joinedCh
	}
	return runErr
}

// join adds this node to an existing cluster through --join (idempotent, so a restarted node
// runs it again) and joins gossip through the seeds the leader returns, or through the seeds
// remembered from the last run.
func join(ctx context.Context, o *Options, srv *coordinator.Server, clientTLS *tls.Config, log *slog.Logger) error {
	seeds := loadSeeds(filepath.Join(o.Config.DataDir, seedsFile))
	if len(o.Join) > 0 {
		cl, err := client.New(client.Config{Addrs: o.Join, Token: o.AdminToken, TLS: clientTLS, Logger: log})
		if err != nil {
			return err
		}
		defer cl.Close()
		resp, err := cl.AddPeer(ctx, &pb.AddPeerRequest{Id: o.Config.NodeID, RaftAddr: srv.RaftAddr(), GrpcAddr: o.Config.GRPCAdvertise})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("coordinator: join through %v: %w", o.Join, err)
		}
		log.Info("joined raft cluster", "through", o.Join)
		seeds = append(resp.GetGossipSeeds(), seeds...)
	}
	if len(seeds) == 0 {
		return nil
	}
	if err := srv.JoinGossip(ctx, seeds); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info("joined gossip", "seeds", seeds)
	return nil
}

func loadSeeds(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var seeds []string
	if json.Unmarshal(b, &seeds) != nil {
		return nil
	}
	return seeds
}

// rememberSeeds writes the gossip addresses of live coordinators to path every few seconds.
func rememberSeeds(ctx context.Context, path string, srv *coordinator.Server, log *slog.Logger) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seeds := srv.CoordinatorGossipAddrs()
		sort.Strings(seeds)
		b, _ := json.Marshal(seeds)
		if string(b) == last || len(seeds) == 0 {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, path)
			if err == nil {
				last = string(b)
				continue
			}
		}
		log.Debug("could not remember gossip seeds", "path", path)
	}
}
