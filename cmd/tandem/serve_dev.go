package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/transport/dialer"
)

// runDev starts a whole cluster in this process: a one-node coordinator and a
// prefill worker (disaggregated mode), a decode worker and a gateway on
// loopback, then prints the endpoints and a curl command. Workers register
// with the coordinator, gossip and report load; the gateway asks it for
// placements. Workers talk over loopback gRPC; KV blocks move through the
// transport's in-process backend.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultServeConfig()
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := cfg.registerCommon(fs)
	cfg.registerWorker(fs)
	cfg.registerGateway(fs)
	if err := parseServe(fs, &cfg, config, args); err != nil {
		return err
	}
	if cfg.Mode != "colocated" && cfg.Mode != "disaggregated" {
		return fmt.Errorf("dev: --mode %q: want colocated or disaggregated", cfg.Mode)
	}
	if cfg.loadSecret() != nil {
		// A dev cluster lives in one process: a fresh random secret will do.
		var b [32]byte
		rand.Read(b[:])
		cfg.clusterSecret = []byte(hex.EncodeToString(b[:]))
	}
	cfg.APIKeys = append(cfg.APIKeys, envList("TANDEM_API_KEYS")...)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	var closers []func()
	defer func() {
		// Stop serving first (cancel, then wait), then release engines.
		cancel()
		g.Wait()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	// One process, one registry: the gateway's /metrics shows every role.
	reg := metrics.NewRegistry()
	coordAddr := ""
	if cfg.Mode == "disaggregated" && len(cfg.Coordinators) == 0 {
		// Placement comes from a real one-node coordinator, as in a cluster.
		addr, cleanup, err := startDevCoordinator(gctx, g, cfg.secret(), cfg.LogLevel, stderr)
		if err != nil {
			return err
		}
		closers = append(closers, cleanup)
		cfg.Coordinators = []string{addr}
		coordAddr = addr
	}
	if cfg.Mode == "colocated" {
		cfg.Coordinators = nil // the colocated router places locally
	}
	wcfg := cfg
	wcfg.Listen = "127.0.0.1:0"
	dec, err := startWorker(gctx, g, wcfg, "decode", cfg.logger(stderr, "decode"), reg, newDecodeService(gctx, g, wcfg, cfg.logger(stderr, "decode")))
	if err != nil {
		return err
	}
	closers = append(closers, dec.close)
	gcfg := cfg
	gcfg.DecodeWorkers = []string{dec.Addr()}
	if cfg.Mode == "disaggregated" {
		routes := newKVRoutes(dialer.Config{}, cfg.logger(stderr, "prefill"))
		routes.add(dec.Addr(), dec.recv)
		pre, err := startWorker(gctx, g, wcfg, "prefill", cfg.logger(stderr, "prefill"), reg, newPrefillService(routes, cfg.logger(stderr, "prefill")))
		if err != nil {
			return err
		}
		closers = append(closers, pre.close, routes.close)
		gcfg.PrefillWorkers = []string{pre.Addr()}
	}
	gw, err := startGateway(gctx, g, gcfg, cfg.logger(stderr, "gateway"), reg)
	if err != nil {
		return err
	}
	closers = append(closers, gw.close)
	name := modelName(cfg.Model)
	auth := ""
	if len(cfg.APIKeys) > 0 {
		auth = ` -H "Authorization: Bearer $TANDEM_API_KEY"`
	}
	fmt.Fprintf(stdout, `Tandem dev cluster ready (%s mode, model %s)
  OpenAI HTTP API  http://%s/v1   (metrics: http://%[3]s/metrics)
  gRPC Inference   %s
  decode worker    %s
`, cfg.Mode, name, gw.httpAddr, gw.grpcAddr, dec.Addr())
	if len(gcfg.PrefillWorkers) > 0 {
		fmt.Fprintf(stdout, "  prefill worker   %s\n", gcfg.PrefillWorkers[0])
	}
	if coordAddr != "" {
		fmt.Fprintf(stdout, "  coordinator      %s   (tandemctl --addr %[1]s status)\n", coordAddr)
	}
	fmt.Fprintf(stdout, `
Try:
  curl -s http://%s/v1/chat/completions%s -H 'Content-Type: application/json' \
    -d '{"model": "%s", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 32}'
`, gw.httpAddr, auth, name)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
