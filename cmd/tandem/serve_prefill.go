package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/prefill"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/inproc"
)

// errNoKVRoute reports a decode worker the prefill worker has no KV
// transport route to.
var errNoKVRoute = errors.New("no KV transport route")

// kvRoutes dials decode workers' receivers. Receivers registered in this
// process are reached through the in-process backend (tandem dev); the
// connection per destination is made once and shared.
type kvRoutes struct {
	local transport.Descriptor

	mu    sync.Mutex
	recvs map[string]*transport.Receiver
	conns map[string]transport.Conn
}

var _ prefill.Dialer = (*kvRoutes)(nil)

func newKVRoutes() *kvRoutes {
	return &kvRoutes{recvs: map[string]*transport.Receiver{}, conns: map[string]transport.Conn{}}
}

func (r *kvRoutes) add(addr string, recv *transport.Receiver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recvs[addr] = recv
}

func (r *kvRoutes) Dial(_ context.Context, addr string) (transport.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.conns[addr]; ok {
		return c, nil
	}
	recv, ok := r.recvs[addr]
	if !ok {
		return nil, fmt.Errorf("prefill: %w to %s", errNoKVRoute, addr)
	}
	c, err := inproc.Dial(r.local, recv, nil)
	if err != nil {
		return nil, err
	}
	r.conns[addr] = c
	return c, nil
}

func (r *kvRoutes) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// newPrefillService builds a prefill worker's service over routes.
func newPrefillService(routes *kvRoutes, log *slog.Logger) func(n *workerNode) (tandemv1.WorkerServer, error) {
	return func(n *workerNode) (tandemv1.WorkerServer, error) {
		routes.local = n.descriptor()
		return prefill.NewServer(n.eng, routes, n.model.ID, metrics.NewTransfer(n.reg), log)
	}
}

func runPrefill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet("prefill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := cfg.registerCommon(fs)
	cfg.registerWorker(fs)
	if err := parseServe(fs, &cfg, config, args); err != nil {
		return err
	}
	log := cfg.logger(stderr, "prefill")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	routes := newKVRoutes()
	defer routes.close()
	n, err := startWorker(gctx, g, cfg, "prefill", log, newPrefillService(routes, log))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "prefill worker listening grpc=%s\n", n.Addr())
	err = g.Wait()
	n.close()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
