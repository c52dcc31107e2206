package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tandemserve/tandem/coordinator/placebench"
)

// runBenchPlacement runs `tandem bench placement`: open-loop placements at a
// fixed rate against an in-process leader, reporting latency percentiles.
func runBenchPlacement(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench placement", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rate := fs.Float64("rate", 5000, "placements per second")
	duration := fs.Duration("duration", 5*time.Second, "measurement time")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *rate <= 0 || *duration <= 0 {
		return fmt.Errorf("bench placement: --rate and --duration must be positive")
	}
	rep, err := placebench.RunPlacementBench(ctx, *rate, *duration)
	if err != nil {
		return err
	}
	if *asJSON {
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"requests": rep.Requests, "errors": rep.Errors, "target_rps": *rate, "achieved_rps": rep.AchievedRPS,
			"p50_ms": ms(rep.P50), "p90_ms": ms(rep.P90), "p99_ms": ms(rep.P99), "max_ms": ms(rep.Max),
			"service_p50_ms": ms(rep.ServiceP50), "service_p99_ms": ms(rep.ServiceP99),
		})
	}
	fmt.Fprintf(stdout, "%d placements (%d errors) at %.0f/s: p50 %v, p90 %v, p99 %v, max %v (service p50 %v, p99 %v)\n",
		rep.Requests, rep.Errors, rep.AchievedRPS, rep.P50, rep.P90, rep.P99, rep.Max, rep.ServiceP50, rep.ServiceP99)
	return nil
}
