package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/gateway"
	"github.com/tandemserve/tandem/metrics"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/worker"
)

func (c *serveConfig) registerGateway(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPListen, "http-listen", "127.0.0.1:8080", "OpenAI-compatible HTTP API listen address")
	fs.StringVar(&c.GRPCListen, "grpc-listen", "127.0.0.1:8081", "gRPC Inference API listen address")
	fs.StringVar(&c.Mode, "mode", c.Mode, "colocated (decode workers prefill too) or disaggregated")
	fs.Var(listFlag{&c.PrefillWorkers}, "prefill", "prefill worker addresses (comma-separated or repeated)")
	fs.Var(listFlag{&c.DecodeWorkers}, "decode", "decode worker addresses (comma-separated or repeated)")
	fs.Var(listFlag{&c.APIKeys}, "api-key", "accepted API key (repeatable; env TANDEM_API_KEYS, comma-separated); none = no auth")
	fs.IntVar(&c.MaxAdmittedTokens, "max-admitted-tokens", c.MaxAdmittedTokens, "prompt+max_tokens of unfinished requests before answering 429")
	fs.IntVar(&c.DefaultMaxTokens, "default-max-tokens", c.DefaultMaxTokens, "max_tokens when a request leaves it unset")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "HTTP request body limit")
}

// gatewayNode is a running gateway.
type gatewayNode struct {
	httpAddr, grpcAddr string
	clients            []*worker.Client
	router             *gateway.Disaggregated // closes the workers it dialed
	coord              *client.Client
}

func (n *gatewayNode) close() {
	for _, c := range n.clients {
		c.Close()
	}
	if n.router != nil {
		n.router.Close()
	}
	if n.coord != nil {
		n.coord.Close()
	}
}

// startGateway dials the workers and serves both APIs in g until ctx ends.
// reg receives the gateway's metrics and is served at /metrics; nil means a
// registry of its own.
func startGateway(ctx context.Context, g *errgroup.Group, cfg serveConfig, log *slog.Logger, reg *metrics.Registry) (*gatewayNode, error) {
	m, err := gateway.LoadModel(cfg.Model)
	if err != nil {
		return nil, err
	}
	dialOpts, err := cfg.workerDialOptions()
	if err != nil {
		return nil, err
	}
	n := &gatewayNode{}
	dial := func(addrs []string) ([]*worker.Client, error) {
		var out []*worker.Client
		for _, a := range addrs {
			c, err := worker.Dial(a, dialOpts...)
			if err != nil {
				return nil, err
			}
			n.clients = append(n.clients, c)
			out = append(out, c)
		}
		return out, nil
	}
	decodes, err := dial(cfg.DecodeWorkers)
	if err != nil {
		n.close()
		return nil, err
	}
	prefills, err := dial(cfg.PrefillWorkers)
	if err != nil {
		n.close()
		return nil, err
	}
	var router gateway.Router
	switch cfg.Mode {
	case "colocated":
		conns := make([]gateway.WorkerConn, len(decodes))
		for i, c := range decodes {
			conns[i] = c
		}
		router, err = gateway.NewColocated(conns)
	case "disaggregated":
		dc := gateway.DefaultDisaggConfig()
		if len(cfg.Coordinators) > 0 {
			cl, cerr := client.New(client.Config{Addrs: cfg.Coordinators, Logger: log})
			if cerr != nil {
				n.close()
				return nil, cerr
			}
			n.coord = cl
			cp, perr := gateway.NewCoordinatorPlacer(cl, modelName(cfg.Model))
			if perr != nil {
				n.close()
				return nil, perr
			}
			cp.HashPrefixes(m.ID, cfg.BlockSize)
			dc.Placer = cp
			dc.Dial = func(addr string) (gateway.RemoteWorker, error) { return worker.Dial(addr, dialOpts...) }
		}
		var d *gateway.Disaggregated
		d, err = gateway.NewDisaggregated(dc, prefills, decodes, cfg.secret(), log)
		if err == nil {
			router, n.router = d, d
		}
	default:
		err = fmt.Errorf("gateway: --mode %q: want colocated or disaggregated", cfg.Mode)
	}
	if err != nil {
		n.close()
		return nil, err
	}
	gc := gateway.DefaultConfig()
	gc.APIKeys, gc.MaxAdmittedTokens, gc.DefaultMaxTokens, gc.MaxBodyBytes, gc.Logger = cfg.APIKeys, cfg.MaxAdmittedTokens, cfg.DefaultMaxTokens, cfg.MaxBodyBytes, log
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	gw, err := gateway.New(gc, m, router, reg)
	if err != nil {
		n.close()
		return nil, err
	}
	hl, err := listen(cfg.HTTPListen)
	if err != nil {
		n.close()
		return nil, err
	}
	var gl net.Listener
	if cfg.GRPCListen != "" {
		if gl, err = listen(cfg.GRPCListen); err != nil {
			hl.Close()
			n.close()
			return nil, err
		}
	}
	serveHTTP(ctx, g, gateway.NewHTTPHandler(gw, reg.Handler()), hl)
	n.httpAddr = hl.Addr().String()
	if gl != nil {
		is := gateway.NewInferenceServer(gw)
		srv := grpc.NewServer(is.ServerOptions()...)
		tandemv1.RegisterInferenceServer(srv, is)
		serveGRPC(ctx, g, srv, gl)
		n.grpcAddr = gl.Addr().String()
	}
	log.Info("gateway ready", "model", m.Name, "mode", cfg.Mode, "http", n.httpAddr, "grpc", n.grpcAddr)
	return n, nil
}

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := cfg.registerCommon(fs)
	cfg.registerGateway(fs)
	fs.StringVar(&cfg.ClusterSecretFile, "cluster-secret-file", cfg.ClusterSecretFile, "file holding the secret that signs KV transfer grants (else env TANDEM_CLUSTER_SECRET)")
	if err := parseServe(fs, &cfg, config, args); err != nil {
		return err
	}
	if cfg.Mode == "disaggregated" {
		if err := cfg.loadSecret(); err != nil {
			return err
		}
	}
	cfg.APIKeys = append(cfg.APIKeys, envList("TANDEM_API_KEYS")...)
	log := cfg.logger(stderr, "gateway")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	n, err := startGateway(gctx, g, cfg, log, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "gateway listening http=%s grpc=%s\n", n.httpAddr, n.grpcAddr)
	err = g.Wait()
	n.close()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// modelName is the name clients use for the model at path.
func modelName(path string) string {
	m := path
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		m = m[i+1:]
	}
	return strings.TrimSuffix(m, ".gguf")
}
