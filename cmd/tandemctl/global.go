package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/mtls"
)

type global struct {
	addrs   []string
	token   string
	tls     mtls.Files
	json    bool
	timeout time.Duration
}

// parseGlobal reads the flags before the command name.
func parseGlobal(args []string, stderr io.Writer, getenv func(string) string) (*global, []string, error) {
	g := &global{}
	fs := flag.NewFlagSet("tandemctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	addr := fs.String("addr", "", "")
	tokenFile := fs.String("token-file", "", "")
	fs.StringVar(&g.tls.CAFile, "tls-ca", "", "")
	fs.StringVar(&g.tls.CertFile, "tls-cert", "", "")
	fs.StringVar(&g.tls.KeyFile, "tls-key", "", "")
	fs.BoolVar(&g.json, "json", false, "")
	fs.DurationVar(&g.timeout, "timeout", 5*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return nil, nil, errUsage
	}
	if g.timeout <= 0 {
		return nil, nil, fmt.Errorf("--timeout must be positive")
	}
	a := *addr
	if a == "" {
		a = getenv("TANDEM_COORDINATORS")
	}
	if a == "" {
		a = "127.0.0.1:7000"
	}
	g.addrs = strings.Split(a, ",")
	g.token = strings.TrimSpace(getenv("TANDEM_ADMIN_TOKEN"))
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("token file: %w", err)
		}
		g.token = strings.TrimSpace(string(b))
	}
	return g, fs.Args(), nil
}

func (g *global) client() (*client.Client, error) {
	cfg := client.Config{Addrs: g.addrs, Token: g.token}
	if g.tls.Enabled() {
		t, err := mtls.LoadClient(g.tls)
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	return client.New(cfg)
}

// explain rewrites the errors an operator meets most into advice.
func explain(err error, g *global) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("cannot reach a coordinator with a leader at %s (is the cluster up? set --addr or TANDEM_COORDINATORS): %w",
			strings.Join(g.addrs, ","), err)
	case errors.Is(err, client.ErrUnauthenticated):
		return fmt.Errorf("the coordinator refused our credentials (set TANDEM_ADMIN_TOKEN or --token-file, or use a client certificate): %w", err)
	case errors.Is(err, client.ErrPermissionDenied):
		return fmt.Errorf("permission denied: %w", err)
	}
	return err
}
