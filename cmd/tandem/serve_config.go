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
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/backends"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/dialer"
	"github.com/tandemserve/tandem/transport/grpcx"
	"github.com/tandemserve/tandem/transport/shm"
	"github.com/tandemserve/tandem/worker"
)

// serveConfig is every serving role's configuration. Flags and a YAML file
// (--config) fill the same struct; flags given on the command line win.
type serveConfig struct {
	Model    string `yaml:"model"`
	Backend  string `yaml:"backend"`
	Threads  int    `yaml:"threads"`
	TP       int    `yaml:"tp"` // tensor-parallel ranks
	KVDType  string `yaml:"kv_dtype"`
	LogLevel string `yaml:"log_level"`
	// Coordinators, when set, are the coordinator cluster's gRPC addresses:
	// workers register and report load there, gateways ask it for placements.
	Coordinators []string `yaml:"coordinators"`
	GossipListen string   `yaml:"gossip_listen"` // workers: gossip bind address

	// Mutual TLS of the Worker service (workers serve it, gateways dial it).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	TLSCA   string `yaml:"tls_ca"`

	// Workers.
	Listen         string `yaml:"listen"`         // gRPC Worker service
	MetricsListen  string `yaml:"metrics_listen"` // /metrics of a worker
	KVListen       string `yaml:"kv_listen"`      // decode: KVTransport gRPC listen address
	KVSocket       string `yaml:"kv_socket"`      // decode: shared-memory transport socket path
	KVCert         string `yaml:"kv_tls_cert"`    // mutual-TLS identity of the KV transport
	KVKey          string `yaml:"kv_tls_key"`
	KVCA           string `yaml:"kv_tls_ca"`
	KVInsecure     bool   `yaml:"kv_insecure"`      // plaintext KV transport (loopback development only)
	Blocks         int    `yaml:"blocks"`           // KV cache blocks
	BlockSize      int    `yaml:"block_size"`       // tokens per block
	ChunkSize      int    `yaml:"chunk_size"`       // prompt tokens per sequence per step
	MaxBatchTokens int    `yaml:"max_batch_tokens"` // token rows per step
	MaxSeqs        int    `yaml:"max_seqs"`         // sequences per step
	// ClusterSecretFile holds the secret that signs KV transfer grants;
	// TANDEM_CLUSTER_SECRET is read when it is empty. Secrets never come
	// from flags, which show in ps.
	ClusterSecretFile string `yaml:"cluster_secret_file"`
	clusterSecret     []byte

	// Gateway.
	HTTPListen        string   `yaml:"http_listen"`
	GRPCListen        string   `yaml:"grpc_listen"`
	Mode              string   `yaml:"mode"` // colocated or disaggregated
	PrefillWorkers    []string `yaml:"prefill_workers"`
	DecodeWorkers     []string `yaml:"decode_workers"`
	APIKeys           []string `yaml:"api_keys"`
	MaxAdmittedTokens int      `yaml:"max_admitted_tokens"`
	DefaultMaxTokens  int      `yaml:"default_max_tokens"`
	MaxBodyBytes      int64    `yaml:"max_body_bytes"`
}

func defaultServeConfig() serveConfig {
	ec := worker.DefaultEngineConfig()
	return serveConfig{
		Model: model.DefaultPath(), Backend: "cpu", KVDType: "f16", LogLevel: "info",
		Blocks: ec.Blocks, BlockSize: ec.BlockSize, ChunkSize: ec.ChunkSize, MaxBatchTokens: ec.MaxTokens, MaxSeqs: ec.MaxSeqs,
		Mode: "disaggregated", MaxAdmittedTokens: 1 << 16, DefaultMaxTokens: 256, MaxBodyBytes: 1 << 20,
	}
}

// listFlag is a comma-separated or repeated string flag.
type listFlag struct{ dst *[]string }

func (l listFlag) String() string {
	if l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.dst = append(*l.dst, s)
		}
	}
	return nil
}

func (c *serveConfig) registerCommon(fs *flag.FlagSet) *string {
	fs.StringVar(&c.Model, "model", c.Model, "GGUF model file")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.Var(listFlag{&c.Coordinators}, "coordinator", "coordinator gRPC addresses (comma-separated or repeated): workers join the cluster, gateways ask it for placements")
	return fs.String("config", "", "YAML config file (flags given explicitly override it)")
}

func (c *serveConfig) registerWorker(fs *flag.FlagSet) {
	fs.IntVar(&c.TP, "tp", c.TP, "tensor-parallel ranks (CPU: --threads are shared between them; CUDA: one GPU each)")
	fs.StringVar(&c.Backend, "backend", c.Backend, fmt.Sprintf("compute backend %v", backends.Names()))
	fs.IntVar(&c.Threads, "threads", c.Threads, "CPU threads (0 = one per core)")
	fs.StringVar(&c.KVDType, "kv-dtype", c.KVDType, "KV cache element type: f16 or int8")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:0", "gRPC listen address of the Worker service")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "HTTP listen address of /metrics (empty = none)")
	fs.StringVar(&c.GossipListen, "gossip-listen", "127.0.0.1:0", "gossip bind address when joining coordinators (port 0 picks one)")
	fs.IntVar(&c.Blocks, "blocks", c.Blocks, "KV cache blocks")
	fs.IntVar(&c.BlockSize, "block-size", c.BlockSize, "tokens per KV block")
	fs.IntVar(&c.ChunkSize, "chunk-size", c.ChunkSize, "prompt tokens of one sequence per step (chunked prefill)")
	fs.IntVar(&c.MaxBatchTokens, "max-batch-tokens", c.MaxBatchTokens, "token rows per engine step")
	fs.IntVar(&c.MaxSeqs, "max-seqs", c.MaxSeqs, "sequences per engine step")
	fs.StringVar(&c.KVListen, "kv-listen", c.KVListen, "decode: KVTransport gRPC listen address (empty = none)")
	fs.StringVar(&c.KVSocket, "kv-socket", c.KVSocket, "decode: shared-memory KV transport socket path (empty = none)")
	fs.StringVar(&c.ClusterSecretFile, "cluster-secret-file", c.ClusterSecretFile, "file holding the secret that signs KV transfer grants (else env TANDEM_CLUSTER_SECRET)")
	fs.StringVar(&c.KVCert, "kv-tls-cert", c.KVCert, "KV transport mutual-TLS certificate (PEM)")
	fs.StringVar(&c.KVKey, "kv-tls-key", c.KVKey, "KV transport mutual-TLS key (PEM)")
	fs.StringVar(&c.KVCA, "kv-tls-ca", c.KVCA, "KV transport cluster CA (PEM)")
	fs.BoolVar(&c.KVInsecure, "kv-insecure", c.KVInsecure, "plaintext KV transport: loopback development only")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "Worker service mutual-TLS certificate (PEM); with --tls-key and --tls-ca, workers require and gateways present client certificates")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "Worker service mutual-TLS key (PEM)")
	fs.StringVar(&c.TLSCA, "tls-ca", c.TLSCA, "Worker service cluster CA (PEM)")
}

// workerTLS is the Worker service's mutual-TLS identity; ok is false when
// none is configured (plaintext, for loopback development).
func (c *serveConfig) workerTLS() (cfg transport.TLSConfig, ok bool, err error) {
	cfg = transport.TLSConfig{CertFile: c.TLSCert, KeyFile: c.TLSKey, CAFile: c.TLSCA}
	if c.TLSCert == "" && c.TLSKey == "" && c.TLSCA == "" {
		return cfg, false, nil
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, fmt.Errorf("worker service TLS needs --tls-cert, --tls-key and --tls-ca: %w", err)
	}
	return cfg, true, nil
}

// workerServerOptions make the Worker service require client certificates
// signed by the cluster CA when TLS is configured.
func (c *serveConfig) workerServerOptions(log *slog.Logger) ([]grpc.ServerOption, error) {
	t, ok, err := c.workerTLS()
	if err != nil || !ok {
		if err == nil && !loopback(c.Listen) {
			log.Warn("worker service without TLS on a non-loopback address: anyone who can reach it can run requests (set --tls-cert, --tls-key and --tls-ca)")
		}
		return nil, err
	}
	tc, err := t.Server()
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, nil
}

// loopback reports whether addr's host is a loopback address.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// workerDialOptions present the gateway's certificate to workers when TLS is
// configured.
func (c *serveConfig) workerDialOptions() ([]grpc.DialOption, error) {
	t, ok, err := c.workerTLS()
	if err != nil || !ok {
		return nil, err
	}
	tc, err := t.Client()
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, nil
}

// kvGRPCConfig is the KV transport's gRPC backend configuration.
func (c *serveConfig) kvGRPCConfig(log *slog.Logger) (grpcx.Config, error) {
	gc := grpcx.DefaultConfig()
	gc.Logger = log
	gc.Insecure = c.KVInsecure
	gc.TLS = transport.TLSConfig{CertFile: c.KVCert, KeyFile: c.KVKey, CAFile: c.KVCA}
	if !c.KVInsecure {
		if err := gc.TLS.Validate(); err != nil {
			return gc, fmt.Errorf("KV transport needs --kv-tls-cert, --kv-tls-key and --kv-tls-ca (or --kv-insecure on loopback): %w", err)
		}
	}
	return gc, gc.Validate()
}

// kvDialConfig is a prefill worker's dialer configuration; Local is filled
// once the engine exists.
func (c *serveConfig) kvDialConfig(log *slog.Logger) (dialer.Config, error) {
	gc, err := c.kvGRPCConfig(log)
	if err != nil {
		return dialer.Config{}, err
	}
	sc := shm.DefaultConfig()
	sc.Logger = log
	return dialer.Config{GRPC: gc, SHM: sc, Logger: log}, nil
}

// parseServe parses args into c, applying a --config file under the flags.
func parseServe(fs *flag.FlagSet, c *serveConfig, config *string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *config == "" {
		return nil
	}
	b, err := os.ReadFile(*config)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", *config, err)
	}
	// Flags named on the command line override the file.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var again []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.TrimLeft(a, "-")
		name, _, _ = strings.Cut(name, "=")
		if strings.HasPrefix(a, "-") && set[name] {
			again = append(again, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && fs.Lookup(name) != nil && !isBoolFlag(fs.Lookup(name)) {
				i++
				again = append(again, args[i])
			}
		}
	}
	if len(again) > 0 {
		if err := fs.Parse(again); err != nil {
			return errUsage
		}
	}
	return nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func (c *serveConfig) logger(w io.Writer, role string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})).With("role", role)
}

func (c *serveConfig) engineConfig() (worker.EngineConfig, error) {
	dt, err := kernels.ParseKVDType(c.KVDType)
	if err != nil {
		return worker.EngineConfig{}, err
	}
	ec := worker.EngineConfig{Blocks: c.Blocks, BlockSize: c.BlockSize, KVDType: dt, ChunkSize: c.ChunkSize,
		MaxTokens: c.MaxBatchTokens, MaxSeqs: c.MaxSeqs, PrefixCaching: true}
	return ec, ec.Validate()
}

// loadSecret reads the cluster secret from its file or the environment.
func (c *serveConfig) loadSecret() error {
	if c.ClusterSecretFile != "" {
		b, err := os.ReadFile(c.ClusterSecretFile)
		if err != nil {
			return fmt.Errorf("cluster secret: %w", err)
		}
		c.clusterSecret = []byte(strings.TrimSpace(string(b)))
	} else if c.clusterSecret == nil {
		c.clusterSecret = []byte(os.Getenv("TANDEM_CLUSTER_SECRET"))
	}
	if len(c.clusterSecret) < transport.MinSecretLen {
		return fmt.Errorf("cluster secret (--cluster-secret-file or TANDEM_CLUSTER_SECRET) must be at least %d bytes", transport.MinSecretLen)
	}
	return nil
}

func (c *serveConfig) secret() []byte { return c.clusterSecret }

// openModel loads the model onto fresh backends (--tp of them).
func (c *serveConfig) openModel() (*model.Model, func(), error) {
	m, _, release, err := loadModel(c.Model, c.Backend, backends.Options{Threads: c.Threads}, max(c.TP, 1))
	return m, release, err
}

// serveGRPC serves srv on lis until ctx ends, then stops it gracefully
// (bounded), so in-flight streams end cleanly.
func serveGRPC(ctx context.Context, g *errgroup.Group, srv *grpc.Server, lis net.Listener) {
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Stop()
			<-done
		}
		return nil
	})
}

// serveHTTP serves h on lis until ctx ends.
func serveHTTP(ctx context.Context, g *errgroup.Group, h http.Handler, lis net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// listen opens a TCP listener; an empty address means none.
func listen(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return lis, nil
}

// envList reads a comma-separated environment variable.
func envList(name string) []string {
	var out []string
	listFlag{&out}.Set(os.Getenv(name))
	return out
}
