package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/tandemserve/tandem/transport/bench"
)

// runBenchTransport implements `tandem bench transport`: loopback
// throughput of the KV-block transport's backends against raw TCP and
// memcpy baselines, and the hand-over time of a 1,024-token prompt's KV.
func runBenchTransport(ctx context.Context, args []string, stdout io.Writer) error {
	opts := bench.DefaultOptions()
	fs := flag.NewFlagSet("bench transport", flag.ContinueOnError)
	fs.SetOutput(stdout)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	sizes := fs.String("sizes", "16K,64K,256K,1M,4M", "comma-separated transfer sizes (K and M suffixes, multiples of 16K)")
	fs.IntVar(&opts.Runs, "runs", opts.Runs, "repetitions per figure; the median is reported")
	fs.DurationVar(&opts.MinTime, "min-time", opts.MinTime, "minimum measured time per repetition")
	fs.IntVar(&opts.ChunkBytes, "chunk", opts.ChunkBytes, "chunk size in bytes of gRPC transfers")
	fs.IntVar(&opts.SHMChunkBytes, "shm-chunk", opts.SHMChunkBytes, "chunk (staging slot) size in bytes of shared-memory transfers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench transport: unexpected arguments %q", fs.Args())
	}
	var err error
	if opts.Sizes, err = parseSizes(*sizes); err != nil {
		return err
	}
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "bytes\tgrpc GB/s\ttcp GB/s\tshm GB/s\tmemcpy GB/s\t")
	for _, r := range rep.Sizes {
		fmt.Fprintf(tw, "%d\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Bytes, r.GRPCGbps, r.TCPGbps, r.SHMGbps, r.MemcpyGbps)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "1 MiB: grpc/tcp %.2f, shm/memcpy %.2f, grpc over mTLS %.2f GB/s\n", rep.GRPCVsTCP, rep.SHMVsMemcpy, rep.GRPCMTLSGbps)
	fmt.Fprintf(stdout, "KV of %d tokens (%d bytes): %.2f ms gRPC+mTLS, %.2f ms gRPC, %.2f ms shm (reserve to claim)\n",
		rep.KVTokens, rep.KVBytes, rep.KV1024TokensMs, rep.KV1024PlainMs, rep.KV1024SHMMs)
	return nil
}

// parseSizes reads "16K,1M,65536".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := 1
		switch {
		case strings.HasSuffix(f, "K"):
			mult, f = 1<<10, strings.TrimSuffix(f, "K")
		case strings.HasSuffix(f, "M"):
			mult, f = 1<<20, strings.TrimSuffix(f, "M")
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bench transport: bad size %q", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}
