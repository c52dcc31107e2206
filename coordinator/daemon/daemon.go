// Package daemon runs one coordinator process: it parses the command line, starts the Raft server
// (package coordinator), serves the gRPC API (package api), joins an existing cluster when asked,
// and shuts everything down in order when its context ends. `tandem coordinator` is a thin
// wrapper around Run.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/api"
	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/mtls"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

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
		return fmt.Errorf("daemon: grpc listen: %w", err)
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

	var runErr error
	joinedCh := joined
	for runErr == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case err := <-serveErr:
			serveErr <- err // the deferred stop reads it
			runErr = fmt.Errorf("daemon: grpc server: %w", err)
		case err := <-metricsErr:
			metricsErr <- err // the deferred shutdown reads it
			runErr = fmt.Errorf("daemon: metrics server: %w", err)
		case err := <-joinedCh:
			joinedCh = nil
			runErr = err // nil once joined: keep serving
		}
	}
	log.Info("coordinator stopping", "err", runErr)
	cancelBG()
	if joinedCh != nil {
		<-joinedCh
	}
	return runErr
}

// join adds this node to the cluster and to gossip. With --join it asks those coordinators to
// add it (AddPeer is idempotent, so a restarted node simply asks again). Without --join (the
// bootstrap node, or any node restarted with state) it waits until either another coordinator
// shows up in gossip (someone joined through us) or the replicated state names other
// coordinators, and asks them: that is how a restarted node whose peers have declared it dead
// gets back into gossip.
func join(ctx context.Context, o *Options, srv *coordinator.Server, clientTLS *tls.Config, log *slog.Logger) error {
	for {
		if len(o.Join) == 0 && len(srv.CoordinatorGossipAddrs()) > 0 {
			return nil
		}
		addrs := o.Join
		if len(addrs) == 0 {
			addrs = peerGRPCAddrs(srv)
		}
		if len(addrs) > 0 {
			err := addSelf(ctx, o, srv, addrs, clientTLS, log)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, client.ErrUnauthenticated), errors.Is(err, client.ErrPermissionDenied), errors.Is(err, client.ErrInvalid):
				return err
			}
			log.Warn("join attempt failed; retrying", "through", addrs, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryEvery):
		}
	}
}

func addSelf(ctx context.Context, o *Options, srv *coordinator.Server, addrs []string, clientTLS *tls.Config, log *slog.Logger) error {
	cl, err := client.New(client.Config{Addrs: addrs, Token: o.AdminToken, TLS: clientTLS, Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cl.AddPeer(actx, &pb.AddPeerRequest{Id: o.Config.NodeID, RaftAddr: srv.RaftAddr(), GrpcAddr: o.Config.GRPCAdvertise})
	if err != nil {
		return fmt.Errorf("daemon: join through %v: %w", addrs, err)
	}
	if err := srv.JoinGossip(actx, resp.GetGossipSeeds()); err != nil {
		return err
	}
	log.Info("joined cluster", "through", addrs, "gossip_seeds", resp.GetGossipSeeds())
	return nil
}

// peerGRPCAddrs lists the gRPC addresses of the other coordinators in the replicated state.
func peerGRPCAddrs(srv *coordinator.Server) []string {
	var out []string
	for _, n := range srv.State().SortedNodes() {
		if n.Role == fsm.RoleCoordinator && n.ID != srv.ID() && n.GRPCAddr != "" {
			out = append(out, n.GRPCAddr)
		}
	}
	return out
}
