package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/worker"
)

// WorkerConn is a gateway's connection to one worker (worker.Client).
type WorkerConn interface {
	Addr() string
	Run(ctx context.Context, req *tandemv1.RunRequest, emit func(int32) error) (string, error)
	Load(ctx context.Context) (*tandemv1.LoadResponse, error)
}

var _ WorkerConn = (*worker.Client)(nil)

// Colocated routes each job whole to one worker that prefills and decodes it
// (chunked prefill inside its continuous batch), choosing the worker with the
// fewest requests in flight from this gateway. When that worker dies
// mid-stream the job resumes on another with its prompt and the tokens
// generated so far, so the client's stream continues with no token lost or
// repeated.
type Colocated struct {
	workers  []WorkerConn
	attempts int

	mu       sync.Mutex
	inFlight []int
}

var _ Router = (*Colocated)(nil)

// NewColocated returns a router over workers.
func NewColocated(workers []WorkerConn) (*Colocated, error) {
	if len(workers) == 0 {
		return nil, fmt.Errorf("%w: no workers", ErrInvalidConfig)
	}
	return &Colocated{workers: workers, attempts: min(len(workers), 3), inFlight: make([]int, len(workers))}, nil
}

// pick takes the least busy worker not in skip, or -1.
func (c *Colocated) pick(skip []int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := -1
	for i, n := range c.inFlight {
		if slices.Contains(skip, i) {
			continue
		}
		if best < 0 || n < c.inFlight[best] {
			best = i
		}
	}
	if best >= 0 {
		c.inFlight[best]++
	}
	return best
}

func (c *Colocated) done(i int) {
	c.mu.Lock()
	c.inFlight[i]--
	c.mu.Unlock()
}

// Generate runs job on the least busy worker, resuming elsewhere if it dies.
func (c *Colocated) Generate(ctx context.Context, job *Job, emit func(int32) error) (string, error) {
	var out []int32
	tracked := func(t int32) error {
		out = append(out, t)
		return emit(t)
	}
	var failed []int
	var lastErr error
	for attempt := range c.attempts {
		t0 := time.Now()
		i := c.pick(failed)
		if i < 0 {
			break
		}
		if attempt == 0 {
			job.Placed(time.Since(t0))
		} else {
			job.Resumed()
		}
		tokens := append(slices.Clone(job.Tokens), out...)
		finish, err := c.workers[i].Run(ctx, runRequest(job, tokens, len(out)), tracked)
		c.done(i)
		if err == nil || ctx.Err() != nil || !workerGone(err) {
			return finish, err
		}
		failed = append(failed, i)
		lastErr = err
	}
	return "", fmt.Errorf("%w: %w", ErrNoWorkers, lastErr)
}

// Ready succeeds when at least one worker answers.
func (c *Colocated) Ready(ctx context.Context) error {
	var errs []error
	for _, w := range c.workers {
		if _, err := w.Load(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.Addr(), err))
			continue
		}
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNoWorkers, errors.Join(errs...))
}

// runRequest builds the worker request for job over tokens, of which the
// last generated were already generated.
func runRequest(job *Job, tokens []int32, generated int) *tandemv1.RunRequest {
	p := job.Params
	// Stop strings are matched on text here at the gateway; workers stop on
	// tokens only.
	p.Stop = nil
	return &tandemv1.RunRequest{
		RequestId: job.ID, Tokens: tokens, Generated: int32(generated),
		Sampling: worker.ParamsToProto(p), Priority: int32(job.Priority),
	}
}
