// Package placebench measures placement latency on a real coordinator: a single-voter Raft group
// on in-memory transports, 16 prefill and 16 decode workers with realistic load reports and
// prefix-cache summaries, and an open-loop generator that issues Place calls at a fixed rate.
// Latency is measured from the moment a request is handed over for sending to its answer, so a
// coordinator that falls behind shows its queueing in the percentiles instead of slowing the
// generator down (no coordinated omission). `tandem bench placement` calls RunPlacementBench.
package placebench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/membership"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// ErrBadArgs reports a non-positive rate or duration.
var ErrBadArgs = errors.New("placebench: rate and duration must be positive")

// Report summarises one run.
type Report struct {
	Requests    int
	Errors      int
	Duration    time.Duration
	AchievedRPS float64
	P50         time.Duration
	P90         time.Duration
	P99         time.Duration
	Max         time.Duration
	// ServiceP50 and ServiceP99 time the Place call alone, without the wait for a free caller:
	// the difference to P50/P99 is queueing (on a busy machine, mostly waiting for a CPU).
	ServiceP50 time.Duration
	ServiceP99 time.Duration
}

func (r Report) String() string {
	return fmt.Sprintf("placements=%d errors=%d rate=%.0f/s p50=%s p90=%s p99=%s max=%s service_p50=%s service_p99=%s",
		r.Requests, r.Errors, r.AchievedRPS, r.P50, r.P90, r.P99, r.Max, r.ServiceP50, r.ServiceP99)
}

const (
	workersPerRole = 16
	blockTokens    = 16
	prefixes       = 64 // distinct shared prompt prefixes (system prompts, documents)
	concurrency    = 8
)

// Fixture is a running single-node coordinator loaded with workers.
type Fixture struct {
	Server *coordinator.Server
	chains [][]uint64
	loads  []*pb.Load
}

// NewFixture starts the coordinator and registers the workers.
func NewFixture(ctx context.Context, log *slog.Logger) (*Fixture, error) {
	cfg := coordinator.DefaultConfig()
	cfg.NodeID = "bench"
	cfg.GRPCAdvertise = "127.0.0.1:1"
	cfg.ClusterSecret = []byte("placement-benchmark-secret-0123456789")
	cfg.Bootstrap = true
	// Workers here do not gossip: keep them alive and their reports fresh for the whole run.
	cfg.DeadGrace, cfg.LoadTTL, cfg.SuspectTTL = time.Hour, time.Hour, time.Hour
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.Gossip.Transport = membership.NewTestNetwork().NewTransport("bench")
	addr, tr := raft.NewInmemTransport("")
	_ = addr
	store := raft.NewInmemStore()
	srv, err := coordinator.New(cfg, coordinator.Deps{
		Logger: log, Transport: tr, LogStore: store, StableStore: store, SnapshotStore: raft.NewInmemSnapshotStore(),
	})
	if err != nil {
		return nil, err
	}
	f := &Fixture{Server: srv}
	if err := f.load(ctx); err != nil {
		_ = srv.Close(context.Background())
		return nil, err
	}
	return f, nil
}

// Close stops the coordinator.
func (f *Fixture) Close(ctx context.Context) error { return f.Server.Close(ctx) }

func (f *Fixture) load(ctx context.Context) error {
	for !f.Server.IsLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("placebench: no leadership: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := f.Server.SetModel(ctx, &pb.Model{Id: "m", BlockTokens: blockTokens}); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for p := range prefixes {
		chain := make([]uint64, 256) // up to 4096 tokens
		for i := range chain {
			chain[i] = uint64(p)<<32 | uint64(i)
		}
		f.chains = append(f.chains, chain)
	}
	for i := range 2 * workersPerRole {
		role := "prefill"
		if i%2 == 1 {
			role = "decode"
		}
		id := fmt.Sprintf("%s-%02d", role, i/2)
		if _, err := f.Server.Register(ctx, &pb.RegisterRequest{Node: &pb.NodeInfo{Id: id, Role: role, GrpcAddr: id + ":7000"}}); err != nil {
			return err
		}
		// Each worker caches a few prefixes, most recent first, like a real prefix cache summary.
		var hashes []uint64
		for range 8 {
			c := f.chains[rng.IntN(prefixes)]
			hashes = append(hashes, c[:rng.IntN(len(c))+1]...)
		}
		total := int32(65536)
		f.loads = append(f.loads, &pb.Load{
			NodeId: id, QueueDepth: int32(rng.IntN(4)), Running: int32(rng.IntN(32)), FreeKvBlocks: total - int32(rng.IntN(16384)),
			TotalKvBlocks: total, BlockTokens: blockTokens, TokensPerSec: 1000, PrefixHashes: hashes,
		})
	}
	return f.report(ctx)
}

// report sends every worker's load once.
func (f *Fixture) report(ctx context.Context) error {
	for _, l := range f.loads {
		if _, err := f.Server.ReportLoad(ctx, &pb.ReportLoadRequest{Load: l}); err != nil {
			return err
		}
	}
	return nil
}

// reportEvery re-sends load reports every 100 ms, as live workers do, until ctx ends; the reports
// clear the leader's per-placement charges exactly as real ones would.
func (f *Fixture) reportEvery(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = f.report(ctx)
		}
	}
}

// Request returns the i-th synthetic request: a prompt of 64..4096 tokens that starts with one of
// the shared prefixes.
func (f *Fixture) Request(rng *rand.Rand, i int) *pb.PlaceRequest {
	chain := f.chains[rng.IntN(prefixes)]
	prompt := 64 + rng.IntN(4096-64)
	return &pb.PlaceRequest{
		RequestId: fmt.Sprint("bench-", i), Model: "m", PromptTokens: int32(prompt), MaxTokens: 256,
		BlockTokens: blockTokens, BlockHashes: chain[:prompt/blockTokens],
	}
}

// RunPlacementBench places requests at rate per second for duration on a fresh fixture and
// reports latency percentiles.
func RunPlacementBench(ctx context.Context, rate float64, duration time.Duration) (Report, error) {
	if rate <= 0 || duration <= 0 {
		return Report{}, ErrBadArgs
	}
	f, err := NewFixture(ctx, nil)
	if err != nil {
		return Report{}, err
	}
	defer f.Close(context.Background())
	return f.Run(ctx, rate, duration)
}

// Run drives the fixture open-loop.
func (f *Fixture) Run(ctx context.Context, rate float64, duration time.Duration) (Report, error) {
	if rate <= 0 || duration <= 0 {
		return Report{}, ErrBadArgs
	}
	n := int(rate * duration.Seconds())
	rctx, stopReports := context.WithCancel(ctx)
	reportsDone := make(chan struct{})
	go func() {
		defer close(reportsDone)
		f.reportEvery(rctx)
	}()
	defer func() {
		stopReports()
		<-reportsDone
	}()
	type job struct {
		i     int
		sched time.Time
	}
	jobs := make(chan job, n)
	lat := make([]time.Duration, n)
	svc := make([]time.Duration, n)
	var (
		mu     sync.Mutex
		errs   int
		wg     sync.WaitGroup
		firstE error
	)
	for w := range concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for j := range jobs {
				req := f.Request(rng, j.i)
				callStart := time.Now()
				_, err := f.Server.Place(ctx, req)
				end := time.Now()
				lat[j.i], svc[j.i] = end.Sub(j.sched), end.Sub(callStart)
				if err != nil {
					mu.Lock()
					errs++
					if firstE == nil {
						firstE = err
					}
					mu.Unlock()
				}
			}
		})
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	sent := 0
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		if d := time.Until(sched); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		// Latency counts from the moment the request is handed to the coordinator's callers, so
		// waiting for a free caller (the coordinator falling behind) is included, while the
		// generator's own timer lateness on a busy machine is not.
		jobs <- job{i: i, sched: time.Now()}
		sent++
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	if sent == 0 {
		return Report{}, ctx.Err()
	}
	lat, svc = lat[:sent], svc[:sent]
	slices.Sort(lat)
	slices.Sort(svc)
	pct := func(d []time.Duration, p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	r := Report{
		Requests: sent, Errors: errs, Duration: elapsed, AchievedRPS: float64(sent) / elapsed.Seconds(),
		P50: pct(lat, 0.50), P90: pct(lat, 0.90), P99: pct(lat, 0.99), Max: lat[len(lat)-1],
		ServiceP50: pct(svc, 0.50), ServiceP99: pct(svc, 0.99),
	}
	if errs > 0 {
		return r, fmt.Errorf("placebench: %d of %d placements failed, first: %w", errs, sent, firstE)
	}
	return r, ctx.Err()
}
