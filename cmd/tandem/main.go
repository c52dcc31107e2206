// Command tandem is the Tandem server binary. Each cluster role is a
// subcommand:
//
//	tandem dev          a whole local cluster in one process tree
//	tandem coordinator  a Raft coordinator node
//	tandem gateway      the gRPC + OpenAI-compatible HTTP front door
//	tandem prefill      a prefill worker
//	tandem decode       a decode worker
//	tandem generate     run a model locally and stream text to stdout
//	tandem bench ...    benchmarks (engine, transport, placement, serve)
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

const usage = `usage: tandem <command> [flags]

commands:
  dev              run a local cluster: coordinator, gateway, prefill and decode workers
  coordinator      run a Raft coordinator node
  gateway          run the gRPC + OpenAI-compatible HTTP gateway
  prefill          run a prefill worker
  decode           run a decode worker (also serves colocated requests)
  generate         run a model locally and stream its output
  bench engine     measure prefill and decode throughput of the engine
  bench transport  measure KV-block transport throughput
  bench placement  measure coordinator placement latency
  bench serve      load-test a gateway
  help             show this help

Run 'tandem <command> -h' for the flags of a command.
`

// errUsage marks errors that come with their own usage text.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tandem:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "generate":
		return runGenerate(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "gateway":
		return runGateway(ctx, rest, stdout, stderr)
	case "prefill":
		return runPrefill(ctx, rest, stdout, stderr)
	case "decode":
		return runDecode(ctx, rest, stdout, stderr)
	case "coordinator":
		return runCoordinator(ctx, rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "tandem: unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, "usage: tandem bench engine|transport|placement|serve [flags]\n")
		return errUsage
	}
	switch args[0] {
	case "engine":
		return runBenchEngine(ctx, args[1:], stdout, stderr)
	case "serve":
		return runBenchServe(ctx, args[1:], stdout, stderr)
	case "transport":
		return runBenchTransport(ctx, args[1:], stdout)
	case "placement":
		return runBenchPlacement(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "tandem: unknown benchmark %q (engine, transport, placement, serve)\n", args[0])
	return errUsage
}
