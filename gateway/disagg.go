package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/worker"
)

// RemoteWorker is a worker the disaggregated router drives (worker.Client).
type RemoteWorker interface {
	WorkerConn
	RPC() tandemv1.WorkerClient
}

var _ RemoteWorker = (*worker.Client)(nil)

// DisaggConfig configures a Disaggregated router.
type DisaggConfig struct {
	// GrantTTL is how long a transfer grant is valid.
	GrantTTL time.Duration
	// Attempts bounds how many decode workers one request may use (the
	// first plus resumes after failures).
	Attempts int
	// Placer, when set, chooses each attempt's workers (the coordinator)
	// instead of the local least-busy rule over the configured pools.
	Placer Placer
	// Dial connects to a worker the Placer names that is not in the
	// configured pools; required with a Placer.
	Dial func(addr string) (RemoteWorker, error)
}

// Placer chooses the workers of one attempt of a job.
type Placer interface {
	// Place returns the workers for job, avoiding the nodes in exclude.
	Place(ctx context.Context, job *Job, exclude []string) (Placement, error)
	// Ready reports whether placements can be made now.
	Ready(ctx context.Context) error
}

// Placement names one attempt's workers by address.
type Placement struct {
	Prefill string // empty when Colocated
	Decode  string
	// Colocated asks the decode worker to prefill the prompt itself.
	Colocated bool
	// Epoch fences the transfer (the placing leader's Raft term).
	Epoch uint64
	// Grant is the placer's signed authorisation of the KV transfer to
	// Decode (the coordinator's transfer id, token and deadline). Without
	// one the gateway, placing locally, signs its own grant.
	Grant *transport.Grant
}

// DefaultDisaggConfig allows three attempts and 30 s grants.
func DefaultDisaggConfig() DisaggConfig { return DisaggConfig{GrantTTL: 30 * time.Second, Attempts: 3} }

// Disaggregated runs each request's prompt on a prefill worker and its
// decoding on a decode worker, in sequence: Attach to decode first (the
// token stream is open before any KV moves), then Prefill, which reserves
// and fills the decode worker's blocks and returns the first token, which
// the gateway forwards on the attach stream. When the decode worker dies
// mid-stream, the request resumes on another decode worker with its prompt
// and the tokens generated so far (Run, which recomputes them there), so the
// client's stream continues with no token lost or repeated.
//
// Placement here is local: the least busy worker of each pool from this
// gateway's view, with grants signed by the cluster secret.
type Disaggregated struct {
	cfg     DisaggConfig
	prefill []RemoteWorker
	decode  []RemoteWorker
	secret  []byte
	log     *slog.Logger

	mu       sync.Mutex
	inFlight map[string]int
	kv       map[string]*tandemv1.LoadResponse // decode worker -> its KV endpoint
	known    map[string]RemoteWorker           // every worker by address
	dialed   []RemoteWorker                    // workers dialed for a Placer, closed by Close
}

var _ Router = (*Disaggregated)(nil)

// NewDisaggregated returns a router over the two pools; secret signs grants.
func NewDisaggregated[P, D RemoteWorker](cfg DisaggConfig, prefill []P, decode []D, secret []byte, log *slog.Logger) (*Disaggregated, error) {
	if cfg.Placer == nil && (len(prefill) == 0 || len(decode) == 0) {
		return nil, fmt.Errorf("%w: disaggregated mode needs prefill and decode workers or a placer", ErrInvalidConfig)
	}
	if cfg.Placer != nil && cfg.Dial == nil {
		return nil, fmt.Errorf("%w: a placer needs a dial function", ErrInvalidConfig)
	}
	if len(secret) < transport.MinSecretLen {
		return nil, fmt.Errorf("%w: cluster secret shorter than %d bytes", ErrInvalidConfig, transport.MinSecretLen)
	}
	if cfg.GrantTTL <= 0 || cfg.Attempts < 1 {
		return nil, fmt.Errorf("%w: %+v", ErrInvalidConfig, cfg)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Disaggregated{cfg: cfg, secret: secret, log: log, inFlight: map[string]int{},
		kv: map[string]*tandemv1.LoadResponse{}, known: map[string]RemoteWorker{}}
	for _, p := range prefill {
		d.prefill = append(d.prefill, p)
		d.known[p.Addr()] = p
	}
	for _, w := range decode {
		d.decode = append(d.decode, w)
		d.known[w.Addr()] = w
	}
	return d, nil
}

// Close closes the connections dialed for placements.
func (d *Disaggregated) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, w := range d.dialed {
		if c, ok := w.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	d.dialed = nil
	return errors.Join(errs...)
}

// resolve returns the worker at addr, dialing it on first use.
func (d *Disaggregated) resolve(addr string) (RemoteWorker, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if w, ok := d.known[addr]; ok {
		return w, nil
	}
	if addr == "" || d.cfg.Dial == nil {
		return nil, fmt.Errorf("%w: placement named unknown worker %q", ErrNoWorkers, addr)
	}
	w, err := d.cfg.Dial(addr)
	if err != nil {
		return nil, err
	}
	d.known[addr] = w
	d.dialed = append(d.dialed, w)
	return w, nil
}

// choose returns one attempt's workers: from the Placer when set, else the
// least busy of each pool. pre is nil when the decode worker prefills.
func (d *Disaggregated) choose(ctx context.Context, job *Job, failed, failedPrefill []string) (dec, pre RemoteWorker, pl Placement, done func(), err error) {
	if d.cfg.Placer == nil {
		dec, doneDec, err := d.pick(d.decode, failed)
		if err != nil {
			return nil, nil, Placement{}, nil, err
		}
		pre, donePre, err := d.pick(d.prefill, failedPrefill)
		if err != nil {
			doneDec()
			return nil, nil, Placement{}, nil, err
		}
		return dec, pre, Placement{Epoch: 1}, func() { doneDec(); donePre() }, nil
	}
	pl, err = d.cfg.Placer.Place(ctx, job, append(slices.Clone(failed), failedPrefill...))
	if err != nil {
		return nil, nil, Placement{}, nil, err
	}
	if dec, err = d.resolve(pl.Decode); err != nil {
		return nil, nil, Placement{}, nil, err
	}
	if !pl.Colocated {
		if pre, err = d.resolve(pl.Prefill); err != nil {
			return nil, nil, Placement{}, nil, err
		}
	}
	return dec, pre, pl, func() {}, nil
}

// pick takes the least busy worker of pool not in skip.
func (d *Disaggregated) pick(pool []RemoteWorker, skip []string) (RemoteWorker, func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var best RemoteWorker
	for _, w := range pool {
		if slices.Contains(skip, w.Addr()) {
			continue
		}
		if best == nil || d.inFlight[w.Addr()] < d.inFlight[best.Addr()] {
			best = w
		}
	}
	if best == nil {
		return nil, nil, ErrNoWorkers
	}
	d.inFlight[best.Addr()]++
	return best, func() {
		d.mu.Lock()
		d.inFlight[best.Addr()]--
		d.mu.Unlock()
	}, nil
}

// workerGone reports an error that means the worker (not the request) failed.
func workerGone(err error) bool {
	if errors.Is(err, worker.ErrStreamEnded) {
		return true
	}
	s, ok := status.FromError(err)
	return ok && (s.Code() == codes.Unavailable || s.Code() == codes.Aborted)
}

// Generate runs job across the pools.
func (d *Disaggregated) Generate(ctx context.Context, job *Job, emit func(int32) error) (string, error) {
	var out []int32
	tracked := func(t int32) error {
		out = append(out, t)
		return emit(t)
	}
	var failed, failedPrefill []string
	var lastErr error
	for attempt := range d.cfg.Attempts {
		t0 := time.Now()
		dec, pre, pl, done, err := d.choose(ctx, job, failed, failedPrefill)
		if err != nil {
			return "", errors.Join(err, lastErr)
		}
		if attempt == 0 {
			job.Placed(time.Since(t0))
		} else {
			job.Resumed()
		}
		var finish string
		if len(out) == 0 && job.Params.MaxTokens > 1 && pre != nil {
			finish, err = d.split(ctx, job, attempt, dec, pre, pl, tracked)
		} else {
			// A resume (or a one-token request): the decode worker
			// computes prompt and tokens so far itself.
			tokens := append(slices.Clone(job.Tokens), out...)
			finish, err = dec.Run(ctx, runRequest(job, tokens, len(out)), tracked)
		}
		done()
		if err == nil || ctx.Err() != nil || !workerGone(err) {
			return finish, err
		}
		lastErr = err
		var pe *prefillError
		if errors.As(err, &pe) && status.Code(pe.err) != codes.Aborted {
			// The prefill worker failed; Aborted instead means its KV
			// transfer to the decode worker failed, which blames decode.
			d.log.Warn("gateway: prefill worker failed; retrying", "request", job.ID, "worker", pe.addr, "err", err)
			failedPrefill = append(failedPrefill, pe.addr)
			continue
		}
		d.log.Warn("gateway: decode worker failed; resuming", "request", job.ID, "worker", dec.Addr(), "generated", len(out), "err", err)
		failed = append(failed, dec.Addr())
	}
	return "", fmt.Errorf("%w: %d attempts failed: %w", ErrNoWorkers, d.cfg.Attempts, lastErr)
}

// grant returns the placer's transfer grant, or signs one when the gateway
// placed the job itself.
func (d *Disaggregated) grant(job *Job, attempt int, dec RemoteWorker, pl Placement) (transport.Grant, error) {
	if pl.Grant != nil {
		return *pl.Grant, nil
	}
	id := fmt.Sprintf("%s-%d", job.ID, attempt)
	return transport.IssueGrant(d.secret, id, pl.Epoch, dec.Addr(), time.Now().Add(d.cfg.GrantTTL))
}

// prefillError is a failed Prefill call, naming the worker.
type prefillError struct {
	addr string
	err  error
}

func (e *prefillError) Error() string {
	return fmt.Sprintf("gateway: prefill on %s: %v", e.addr, e.err)
}
func (e *prefillError) Unwrap() error { return e.err }

// split runs one attempt as attach-then-prefill.
func (d *Disaggregated) split(ctx context.Context, job *Job, attempt int, dec, pre RemoteWorker, pl Placement, emit func(int32) error) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the attach stream, and with it decode's work
	grant, err := d.grant(job, attempt, dec, pl)
	if err != nil {
		return "", err
	}
	id := grant.TransferID
	kv, err := d.kvEndpoint(ctx, dec)
	if err != nil {
		return "", err
	}
	run := runRequest(job, job.Tokens, 0)
	attach, err := dec.RPC().Attach(ctx)
	if err != nil {
		return "", err
	}
	if err := attach.Send(&tandemv1.AttachRequest{Run: run, TransferId: id}); err != nil {
		return "", attachErr(attach, err)
	}
	resp, err := pre.RPC().Prefill(ctx, &tandemv1.PrefillRequest{
		Run: run, DecodeAddr: dec.Addr(), TransferId: grant.TransferID, Epoch: grant.Epoch,
		ExpiryUnixNano: grant.Expiry.UnixNano(), Token: grant.Token,
		DecodeKvAddr: kv.GetKvAddr(), DecodeKvSocket: kv.GetKvSocket(), DecodeHostId: kv.GetHostId(),
	})
	if err != nil {
		return "", &prefillError{addr: pre.Addr(), err: err}
	}
	if resp.FirstToken == nil {
		return resp.GetFinishReason(), nil
	}
	if err := emit(resp.GetFirstToken()); err != nil {
		return "", err
	}
	first := resp.GetFirstToken()
	if err := attach.Send(&tandemv1.AttachRequest{FirstToken: &first}); err != nil {
		return "", attachErr(attach, err)
	}
	return worker.Consume(attach, emit)
}

// kvEndpoint returns where dec's KV receiver listens, asking it once.
func (d *Disaggregated) kvEndpoint(ctx context.Context, dec RemoteWorker) (*tandemv1.LoadResponse, error) {
	d.mu.Lock()
	kv, ok := d.kv[dec.Addr()]
	d.mu.Unlock()
	if ok {
		return kv, nil
	}
	kv, err := dec.Load(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.kv[dec.Addr()] = kv
	d.mu.Unlock()
	return kv, nil
}

// Ready succeeds when a worker of each pool answers, or the Placer is ready.
func (d *Disaggregated) Ready(ctx context.Context) error {
	if d.cfg.Placer != nil {
		return d.cfg.Placer.Ready(ctx)
	}
	for _, pool := range [][]RemoteWorker{d.prefill, d.decode} {
		var errs []error
		ok := false
		for _, w := range pool {
			if _, err := w.Load(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", w.Addr(), err))
				continue
			}
			ok = true
			break
		}
		if !ok {
			return fmt.Errorf("%w: %w", ErrNoWorkers, errors.Join(errs...))
		}
	}
	return nil
}

// attachErr returns the real error of a failed Send: gRPC reports io.EOF
// from Send when the server ended the stream, and its status from Recv.
func attachErr(stream worker.TokenStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := stream.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return worker.ErrStreamEnded
			}
			return rerr
		}
	}
}
