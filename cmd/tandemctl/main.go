// Command tandemctl is the operator's CLI for a Tandem cluster: it talks to the coordinators'
// Admin API to show cluster and node status and to drain nodes, change Raft membership, manage
// models and the placement policy, and take snapshots.
//
// Output is a human table by default and JSON with --json. Credentials: the admin token comes
// from --token-file or TANDEM_ADMIN_TOKEN (never a flag value, which would show in ps); mutual
// TLS from --tls-ca/--tls-cert/--tls-key.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: tandemctl [global flags] <command> [args]

commands:
  status                       leader, term, commit index, voters and their health
  nodes [--role ROLE]          registered nodes: role, state, load, device
  drain NODE                   stop new placements on NODE; it turns drained when idle
  undrain NODE                 return NODE to service
  peers add ID RAFT GRPC [--nonvoter]
                               add a coordinator to the Raft group
  peers remove ID              remove a coordinator from the Raft group
  models                       models and the nodes serving them
  models set ID [--pools a,b] [--block-tokens N]
  models remove ID
  policy get                   print the placement policy (JSON)
  policy set FILE              replace the placement policy (FILE or - for stdin)
  snapshot save                take a Raft snapshot on the answering coordinator

global flags:
  --addr LIST        comma-separated coordinator gRPC addresses (env TANDEM_COORDINATORS,
                     default 127.0.0.1:7000)
  --token-file FILE  admin token file (env TANDEM_ADMIN_TOKEN)
  --tls-ca, --tls-cert, --tls-key FILE   TLS / mutual TLS
  --json             machine-readable output
  --timeout D        give up after D (default 5s)
`

// errUsage marks errors whose usage text has already been printed.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tandemctl:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	g, rest, err := parseGlobal(args, stderr, getenv)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, ok := commands()[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "tandemctl: unknown command %q\n\n%s", rest[0], usage)
		return errUsage
	}
	if rest[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cl, err := g.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	e := &env{g: g, cl: cl, stdin: stdin, out: stdout, errOut: stderr}
	return explain(cmd(ctx, e, rest[1:]), g)
}
