package main

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/prefill"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/dialer"
	"github.com/tandemserve/tandem/transport/inproc"
	"github.com/tandemserve/tandem/transport/shm"
)

// kvRoutes dials decode workers' KV receivers. Receivers registered in this
// process (tandem dev) are reached through the in-process backend; others
// through the transport's dialer (shared memory on the same host, gRPC over
// mutual TLS otherwise). One connection per decode node is made and shared
// until a failed transfer drops it.
type kvRoutes struct {
	cfg dialer.Config
	log *slog.Logger

	mu    sync.Mutex
	recvs map[string]*transport.Receiver
	conns map[string]transport.Conn
}

var _ prefill.Dialer = (*kvRoutes)(nil)

func newKVRoutes(cfg dialer.Config, log *slog.Logger) *kvRoutes {
	return &kvRoutes{cfg: cfg, log: log, recvs: map[string]*transport.Receiver{}, conns: map[string]transport.Conn{}}
}

// add registers an in-process receiver for node.
func (r *kvRoutes) add(node string, recv *transport.Receiver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recvs[node] = recv
}

func (r *kvRoutes) Dial(ctx context.Context, peer dialer.Peer) (transport.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[peer.NodeID]; ok {
		return c, nil
	}
	var c transport.Conn
	var err error
	kind := dialer.Kind("in-process")
	if recv, ok := r.recvs[peer.NodeID]; ok {
		c, err = inproc.Dial(r.cfg.Local, recv, nil)
	} else {
		c, kind, err = dialer.Dial(ctx, r.cfg, peer)
	}
	if err != nil {
		return nil, err
	}
	attrs := []any{"decode", peer.NodeID, "backend", string(kind)}
	if sc, ok := c.(*shm.Conn); ok {
		attrs = append(attrs, "in_place", sc.InPlace())
	}
	r.log.Info("KV route connected", attrs...)
	r.conns[peer.NodeID] = c
	return c, nil
}

func (r *kvRoutes) Drop(node string) {
	r.mu.Lock()
	c := r.conns[node]
	delete(r.conns, node)
	r.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (r *kvRoutes) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, c := range r.conns {
		c.Close()
		delete(r.conns, n)
	}
}

// newPrefillService builds a prefill worker's service over routes.
func newPrefillService(routes *kvRoutes, log *slog.Logger) func(n *workerNode) (tandemv1.WorkerServer, error) {
	return func(n *workerNode) (tandemv1.WorkerServer, error) {
		routes.cfg.Local = n.descriptor()
		srv, err := prefill.NewServer(n.eng, routes, n.model.ID, metrics.NewTransfer(n.reg), log)
		if err != nil {
			return nil, err
		}
		srv.SetMetrics(n.wm)
		return srv, nil
	}
}

func runPrefill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWorker(ctx, "prefill", args, stdout, stderr, func(_ context.Context, _ *errgroup.Group, cfg serveConfig, log *slog.Logger) (func(n *workerNode) (tandemv1.WorkerServer, error), func(), error) {
		kvc, err := cfg.kvDialConfig(log)
		if err != nil {
			return nil, nil, err
		}
		routes := newKVRoutes(kvc, log)
		return newPrefillService(routes, log), routes.close, nil
	})
}
