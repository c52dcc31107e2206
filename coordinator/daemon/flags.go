package daemon

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/mtls"
)

// ErrUsage marks a command-line error; the flag set has already printed usage.
var ErrUsage = errors.New("daemon: usage error")

// Options are the parsed command line.
type Options struct {
	Config        coordinator.Config
	GRPCListen    string
	GossipListen  string
	GossipAdvert  string
	Join          []string
	AdminToken    string
	TLS           mtls.Files
	MetricsListen string
	LogLevel      string
}

// Parse reads flags and the secret environment variables into Options.
//
// Secrets never come from flags (they would show in ps): the cluster secret comes from
// --cluster-secret-file or TANDEM_CLUSTER_SECRET, the admin token from --admin-token-file or
// TANDEM_ADMIN_TOKEN, the gossip key (base64 of 16, 24 or 32 bytes) from --gossip-key-file or
// TANDEM_GOSSIP_KEY.
func Parse(args []string, stderr io.Writer, getenv func(string) string) (*Options, error) {
	o := &Options{Config: coordinator.DefaultConfig()}
	c := &o.Config
	fs := flag.NewFlagSet("tandem coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.NodeID, "id", "", "unique node id (required)")
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for the Raft log, stable store and snapshots (required)")
	fs.StringVar(&c.RaftBind, "raft-addr", "127.0.0.1:7100", "Raft listen address")
	fs.StringVar(&c.RaftAdvertise, "raft-advertise", "", "Raft address peers dial (default: the listen address)")
	fs.StringVar(&o.GRPCListen, "grpc-addr", "127.0.0.1:7000", "gRPC API listen address")
	fs.StringVar(&c.GRPCAdvertise, "grpc-advertise", "", "gRPC address others dial (default: the listen address)")
	fs.StringVar(&o.GossipListen, "gossip-addr", "127.0.0.1:7200", "gossip listen address (UDP and TCP)")
	fs.StringVar(&o.GossipAdvert, "gossip-advertise", "", "gossip address others dial (default: the listen address)")
	fs.BoolVar(&c.Bootstrap, "bootstrap", false, "bootstrap a new cluster with this node as the only voter")
	join := fs.String("join", "", "comma-separated gRPC addresses of existing coordinators to join through")
	fs.StringVar(&o.TLS.CertFile, "tls-cert", "", "PEM certificate for mutual TLS (Raft and gRPC)")
	fs.StringVar(&o.TLS.KeyFile, "tls-key", "", "PEM key for --tls-cert")
	fs.StringVar(&o.TLS.CAFile, "tls-ca", "", "PEM CA bundle that signs every cluster certificate")
	secretFile := fs.String("cluster-secret-file", "", "file holding the cluster secret (or TANDEM_CLUSTER_SECRET)")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin bearer token (or TANDEM_ADMIN_TOKEN)")
	keyFile := fs.String("gossip-key-file", "", "file holding the base64 gossip encryption key (or TANDEM_GOSSIP_KEY)")
	fs.StringVar(&o.MetricsListen, "metrics-addr", "", "serve Prometheus /metrics on this address")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&c.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", c.Raft.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&c.Raft.ElectionTimeout, "raft-election-timeout", c.Raft.ElectionTimeout, "Raft election timeout")
	fs.DurationVar(&c.Raft.LeaderLeaseTimeout, "raft-lease-timeout", c.Raft.LeaderLeaseTimeout, "Raft leader lease timeout")
	fs.DurationVar(&c.DeadGrace, "dead-grace", c.DeadGrace, "how long a registered node may be missing from gossip before it is dead")
	fs.DurationVar(&c.LoadTTL, "load-ttl", c.LoadTTL, "workers silent for this long get no new placements")
	fs.DurationVar(&c.TransferTTL, "transfer-ttl", c.TransferTTL, "validity of a placement's transfer token")
	probe := fs.Duration("gossip-probe-interval", 0, "gossip probe interval (0: memberlist LAN default, 1s)")
	fs.String("config", "", "YAML file whose keys are these flag names; flags on the command line win")
	if err := applyConfigFile(fs, args); err != nil {
		fmt.Fprintln(stderr, err)
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrUsage
		}
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n", fs.Args())
		fs.Usage()
		return nil, ErrUsage
	}
	if c.NodeID == "" || c.DataDir == "" {
		fmt.Fprintln(stderr, "--id and --data-dir are required")
		fs.Usage()
		return nil, ErrUsage
	}
	if *join != "" {
		o.Join = strings.Split(*join, ",")
	}
	if c.GRPCAdvertise == "" {
		c.GRPCAdvertise = o.GRPCListen
	}
	var err error
	if c.ClusterSecret, err = secret(*secretFile, getenv("TANDEM_CLUSTER_SECRET")); err != nil {
		return nil, fmt.Errorf("daemon: cluster secret: %w", err)
	}
	tok, err := secret(*tokenFile, getenv("TANDEM_ADMIN_TOKEN"))
	if err != nil {
		return nil, fmt.Errorf("daemon: admin token: %w", err)
	}
	o.AdminToken = string(tok)
	key, err := secret(*keyFile, getenv("TANDEM_GOSSIP_KEY"))
	if err != nil {
		return nil, fmt.Errorf("daemon: gossip key: %w", err)
	}
	if len(key) > 0 {
		if c.Gossip.SecretKey, err = base64.StdEncoding.DecodeString(string(key)); err != nil {
			return nil, fmt.Errorf("%w: gossip key is not base64: %w", coordinator.ErrConfig, err)
		}
	}
	host, port, err := splitHostPort(o.GossipListen)
	if err != nil {
		return nil, fmt.Errorf("%w: --gossip-addr: %w", coordinator.ErrConfig, err)
	}
	c.Gossip.BindAddr, c.Gossip.BindPort = host, port
	if o.GossipAdvert != "" {
		if c.Gossip.AdvertiseAddr, c.Gossip.AdvertisePort, err = splitHostPort(o.GossipAdvert); err != nil {
			return nil, fmt.Errorf("%w: --gossip-advertise: %w", coordinator.ErrConfig, err)
		}
	}
	c.Gossip.ProbeInterval = *probe
	return o, nil
}

// applyConfigFile finds --config in args and sets every key of that YAML file as the flag of the
// same name, so a file and the command line fill the same Options (the command line, parsed
// afterwards, overrides). Unknown keys and non-scalar values are errors.
func applyConfigFile(fs *flag.FlagSet, args []string) error {
	path := ""
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		switch {
		case hasVal:
			path = val
		case i+1 < len(args):
			path = args[i+1]
		}
	}
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("daemon: config file: %w", err)
	}
	var kv map[string]any
	if err := yaml.Unmarshal(b, &kv); err != nil {
		return fmt.Errorf("daemon: config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return fmt.Errorf("daemon: config file %s: unknown key %q", path, k)
		}
		var v string
		switch x := kv[k].(type) {
		case string, bool, int, float64:
			v = fmt.Sprint(x)
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			v = strings.Join(parts, ",") // lists, e.g. join: [a, b]
		default:
			return fmt.Errorf("daemon: config file %s: key %q must be a scalar or a list", path, k)
		}
		if err := fs.Set(k, v); err != nil {
			return fmt.Errorf("daemon: config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// secret reads a file (trimmed) or falls back to the environment value.
func secret(file, env string) ([]byte, error) {
	if file == "" {
		return []byte(strings.TrimSpace(env)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}

// retryEvery is the pause between join attempts.
const retryEvery = 500 * time.Millisecond
