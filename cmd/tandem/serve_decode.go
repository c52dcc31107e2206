package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/decode"
	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/shm"
	"github.com/tandemserve/tandem/worker"
)

// workerNode is one running worker: its model, engine and gRPC listener.
type workerNode struct {
	role     string
	model    *model.Model
	eng      *engine.Engine
	cache    kernels.KVCache
	recv     *transport.Receiver // decode only
	fence    *shm.Fence          // decode with a KV socket only
	kvAddr   string              // decode only: KVTransport address
	session  *client.Session     // set when joined to coordinators
	coord    *client.Client
	reg      *metrics.Registry
	wm       *metrics.Worker
	grpc     *grpc.Server
	lis      net.Listener
	closeAll func()
}

// Addr is the Worker service's address.
func (n *workerNode) Addr() string { return n.lis.Addr().String() }

// descriptor describes the node's KV memory for the transport.
func (n *workerNode) descriptor() transport.Descriptor {
	return transport.Descriptor{NodeID: n.Addr(), ModelID: n.model.ID, Spec: n.cache.Spec(), Layout: transport.LayoutKThenV, HostID: transport.LocalHostID()}
}

// close releases everything in dependency order; the gRPC server must have
// stopped first.
func (n *workerNode) close() {
	if n.session != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.session.Close(ctx)
		cancel()
		n.coord.Close()
	}
	if n.recv != nil {
		n.recv.Close()
	}
	if n.fence != nil {
		n.fence.Close() // after the receiver: it disarms leases as it closes
	}
	n.eng.Close()
	n.cache.Close()
	n.closeAll()
}

// startWorker opens the model, starts the engine and the role's gRPC service
// and registers them in g; they stop when ctx ends. mk builds the role's
// service once the engine runs.
//
// reg receives the worker's metrics; nil means a registry of its own.
func startWorker(ctx context.Context, g *errgroup.Group, cfg serveConfig, role string, log *slog.Logger, reg *metrics.Registry,
	mk func(n *workerNode) (tandemv1.WorkerServer, error)) (*workerNode, error) {
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	ec, err := cfg.engineConfig()
	if err != nil {
		return nil, err
	}
	m, closeAll, err := cfg.openModel()
	if err != nil {
		return nil, err
	}
	eng, cache, err := worker.NewEngine(m, ec, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	n := &workerNode{role: role, model: m, eng: eng, cache: cache, reg: reg, closeAll: closeAll}
	if n.wm, err = metrics.NewWorker(reg, role); err != nil {
		n.close()
		return nil, err
	}
	if n.lis, err = listen(cfg.Listen); err != nil {
		n.close()
		return nil, err
	}
	svc, err := mk(n)
	if err != nil {
		n.lis.Close()
		n.close()
		return nil, err
	}
	if err := metrics.RegisterEngine(n.reg, role, eng.Load); err != nil {
		n.lis.Close()
		n.close()
		return nil, err
	}
	opts, err := cfg.workerServerOptions(log)
	if err != nil {
		n.lis.Close()
		n.close()
		return nil, err
	}
	n.grpc = grpc.NewServer(opts...)
	tandemv1.RegisterWorkerServer(n.grpc, svc)
	serveGRPC(ctx, g, n.grpc, n.lis)
	if cfg.MetricsListen != "" {
		mlis, err := listen(cfg.MetricsListen)
		if err != nil {
			n.grpc.Stop()
			n.close()
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", n.reg.Handler())
		serveHTTP(ctx, g, mux, mlis)
		log.Info("metrics", "addr", mlis.Addr().String())
	}
	if len(cfg.Coordinators) > 0 {
		if n.session, n.coord, err = joinCluster(ctx, cfg, role, n.Addr(), n.kvAddr, eng.Load, log); err != nil {
			n.grpc.Stop()
			n.close()
			return nil, err
		}
	}
	log.Info("worker ready", "model", m.ID, "grpc", n.Addr())
	return n, nil
}

// newDecodeService builds a decode worker's service and its KV receiver,
// served on the configured KV transports until ctx ends.
func newDecodeService(ctx context.Context, g *errgroup.Group, cfg serveConfig, log *slog.Logger) func(n *workerNode) (tandemv1.WorkerServer, error) {
	return func(n *workerNode) (tandemv1.WorkerServer, error) {
		rc := transport.DefaultReceiverConfig(n.descriptor())
		rc.Secret = cfg.secret()
		rc.Logger = log
		if cfg.KVSocket != "" {
			// Same-host prefill workers write leased blocks straight into
			// the KV cache (when it is host memory in a memfd), each block
			// guarded by the fence.
			fence, err := shm.NewFence(n.cache.Spec().Blocks)
			if err != nil {
				return nil, err
			}
			n.fence, rc.Fence = fence, fence
		}
		recv, err := transport.NewReceiver(rc, n.cache, n.eng)
		if err != nil {
			return nil, err
		}
		n.recv = recv
		if err := metrics.RegisterReceiver(n.reg, recv.Active, recv.Quarantined); err != nil {
			return nil, err
		}
		dc := decode.DefaultConfig()
		dc.Logger = log
		srv, err := decode.NewServer(dc, n.eng, recv, n.model.ID)
		if err != nil {
			return nil, err
		}
		kv := worker.KVEndpoint{HostID: transport.LocalHostID()}
		if cfg.KVListen != "" {
			gc, err := cfg.kvGRPCConfig(log)
			if err != nil {
				return nil, err
			}
			ks, err := grpcx.NewServer(gc, recv)
			if err != nil {
				return nil, err
			}
			lis, err := listen(cfg.KVListen)
			if err != nil {
				return nil, err
			}
			kv.Addr = lis.Addr().String()
			n.kvAddr = kv.Addr
			g.Go(func() error { return ks.Serve(lis) })
			g.Go(func() error { <-ctx.Done(); return ks.Close() })
		}
		if cfg.KVSocket != "" {
			sc := shm.DefaultConfig()
			sc.Logger = log
			ss, err := shm.NewServer(sc, recv)
			if err != nil {
				return nil, err
			}
			lis, err := shm.Listen(cfg.KVSocket)
			if err != nil {
				return nil, err
			}
			kv.Socket = cfg.KVSocket
			g.Go(func() error { return ss.Serve(lis) })
			g.Go(func() error { <-ctx.Done(); return ss.Close() })
		}
		srv.SetKVEndpoint(kv)
		srv.SetMetrics(n.wm)
		log.Info("KV receiver", "grpc", kv.Addr, "shm", kv.Socket)
		return srv, nil
	}
}

// serviceFactory builds a worker role's Worker service; the returned
// release function (may be nil) runs after the worker stops.
type serviceFactory func(ctx context.Context, g *errgroup.Group, cfg serveConfig, log *slog.Logger) (func(n *workerNode) (tandemv1.WorkerServer, error), func(), error)

// runWorker is the command of one worker role: parse flags (and the config
// file), start the worker, serve until ctx ends.
func runWorker(ctx context.Context, role string, args []string, stdout, stderr io.Writer, service serviceFactory) error {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := cfg.registerCommon(fs)
	cfg.registerWorker(fs)
	if err := parseServe(fs, &cfg, config, args); err != nil {
		return err
	}
	log := cfg.logger(stderr, role)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	mk, release, err := service(gctx, g, cfg, log)
	if err != nil {
		return fmt.Errorf("%s: %w", role, err)
	}
	if release != nil {
		defer release()
	}
	n, err := startWorker(gctx, g, cfg, role, log, nil, mk)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s worker listening grpc=%s\n", role, n.Addr())
	err = g.Wait()
	n.close()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func runDecode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWorker(ctx, "decode", args, stdout, stderr, func(ctx context.Context, g *errgroup.Group, cfg serveConfig, log *slog.Logger) (func(n *workerNode) (tandemv1.WorkerServer, error), func(), error) {
		if err := cfg.loadSecret(); err != nil {
			return nil, nil, err
		}
		return newDecodeService(ctx, g, cfg, log), nil, nil
	})
}
