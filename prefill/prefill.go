// Package prefill is the prefill worker: it computes prompts' KV in its own
// continuous batch (with its own prefix cache) and hands each prompt's KV to
// the decode worker the request was placed on.
//
// The model (docs/request-lifecycle.md): Prefill admits the prompt into the
// engine with KeepKV and a one-token budget. When the engine runs the
// prompt's final chunk (not before: reserving while the request queued here
// would charge this worker's queueing to decode memory), the worker reserves
// destination blocks on the decode worker through the KV transport and
// streams each layer's blocks as soon as the engine has stored that layer,
// so the transfer overlaps the remaining layers' compute. The stream is one
// ordered channel that ends with the commit. The worker then releases its
// own references (the blocks stay in its prefix cache, unpinned) and returns
// the first token. A failed transfer fails the call with the transport's
// typed error; the gateway decides whether to retry.
package prefill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/metrics"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/dialer"
	"github.com/tandemserve/tandem/worker"
)

var (
	// ErrInvalidPrefill reports a malformed Prefill call.
	ErrInvalidPrefill = errors.New("prefill: invalid request")
	// ErrTransfer reports a KV transfer that failed.
	ErrTransfer = errors.New("prefill: KV transfer failed")
)

// Engine is what the prefill worker needs from engine.Engine.
type Engine interface {
	worker.Engine
	Free(blocks []int32)
	Cache() kernels.KVCache
}

var _ Engine = (*engine.Engine)(nil)

// Dialer connects to a decode worker's KV receiver. Implementations cache
// connections per node; the returned Conn is shared and not closed by the
// caller, who calls Drop after a failed transfer so the next one redials.
type Dialer interface {
	Dial(ctx context.Context, peer dialer.Peer) (transport.Conn, error)
	Drop(nodeID string)
}

// Server is the prefill worker's Worker service: Prefill, Run and Load.
type Server struct {
	*worker.Server
	eng     Engine
	dial    Dialer
	metrics *metrics.Transfer
	log     *slog.Logger
}

var _ tandemv1.WorkerServer = (*Server)(nil)

// NewServer returns a prefill server over eng, pushing KV through dial.
func NewServer(eng Engine, dial Dialer, model string, m *metrics.Transfer, log *slog.Logger) (*Server, error) {
	if eng == nil || dial == nil || m == nil {
		return nil, fmt.Errorf("%w: nil dependency", ErrInvalidPrefill)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{Server: worker.NewServer(eng, model, "prefill", log), eng: eng, dial: dial, metrics: m, log: log}, nil
}

// Prefill computes the prompt, pushes its KV to the decode worker and
// returns the first token.
func (s *Server) Prefill(ctx context.Context, req *tandemv1.PrefillRequest) (*tandemv1.PrefillResponse, error) {
	run := req.GetRun()
	if run == nil || req.GetDecodeAddr() == "" || req.GetTransferId() == "" || len(req.GetToken()) == 0 {
		return nil, worker.ToStatus(fmt.Errorf("%w: %w: need a request, a decode address and a transfer grant", ErrInvalidPrefill, worker.ErrInvalidRequest))
	}
	if run.GetModel() != "" && run.GetModel() != s.Model() {
		return nil, worker.ToStatus(fmt.Errorf("%w: %q", worker.ErrWrongModel, run.GetModel()))
	}
	if run.GetGenerated() != 0 || len(run.GetTokens()) == 0 {
		return nil, worker.ToStatus(fmt.Errorf("%w: %w: a prefill takes a fresh prompt", ErrInvalidPrefill, worker.ErrInvalidRequest))
	}
	p := worker.ParamsFromProto(run.GetSampling(), 0)
	if err := p.Validate(0); err != nil {
		return nil, worker.ToStatus(fmt.Errorf("%w: %w: %w", ErrInvalidPrefill, worker.ErrInvalidRequest, err))
	}
	// The engine samples exactly the first token with the request's own
	// parameters; decode continues from it.
	p.MaxTokens = 1
	tokens := run.GetTokens()
	grant := transport.Grant{TransferID: req.GetTransferId(), Epoch: req.GetEpoch(), Expiry: time.Unix(0, req.GetExpiryUnixNano()), Token: req.GetToken()}
	peer := dialer.Peer{NodeID: req.GetDecodeAddr(), HostID: req.GetDecodeHostId(), GRPCAddr: req.GetDecodeKvAddr(), ShmSocket: req.GetDecodeKvSocket()}
	layers := newLayerFeed(len(tokens), s.eng.Cache().Spec().Layers)
	h, err := s.eng.Add(ctx, engine.Request{Tokens: tokens, Params: p, Priority: int(run.GetPriority()), KeepKV: true, OnLayer: layers.onLayer})
	if err != nil {
		return nil, worker.ToStatus(err)
	}
	// The pusher runs beside the engine from the first final-chunk layer on.
	// Every return below stops it and waits for it (and for the transport to
	// let go of the source blocks) before the kept KV is released.
	pctx, stopPush := context.WithCancel(ctx)
	pushed := make(chan pushResult, 1)
	go func() { pushed <- s.stream(pctx, peer, grant, layers) }()
	var res *pushResult
	wait := func() pushResult {
		if res == nil {
			r := <-pushed
			res = &r
			<-r.released
		}
		return *res
	}
	defer s.release(h)
	defer wait()
	defer stopPush()
	defer h.Cancel()

	first, err := h.Next(ctx)
	if errors.Is(err, io.EOF) {
		// The first token ended the request: nothing to push.
		_, reason, _ := h.Finish()
		return &tandemv1.PrefillResponse{FinishReason: string(reason)}, nil
	}
	if err != nil {
		return nil, worker.ToStatus(err)
	}
	if m := s.Metrics(); m != nil {
		added, at, _ := h.Timing()
		m.EngineTTFT.Observe(at.Sub(added).Seconds())
	}
	if _, err := h.Next(ctx); !errors.Is(err, io.EOF) {
		return nil, worker.ToStatus(fmt.Errorf("prefill: first token budget not honoured: %w", err))
	}
	kept, computed, ok := h.TakeKV()
	if !ok {
		return nil, worker.ToStatus(fmt.Errorf("prefill: request %s kept no KV", run.GetRequestId()))
	}
	// The pusher ends after the final chunk's last layer; only then, and
	// once the transport has let go of them, are the blocks released.
	r := wait()
	s.eng.Free(kept)
	if computed != len(tokens) {
		return nil, worker.ToStatus(fmt.Errorf("prefill: request %s kept KV of %d tokens, want %d", run.GetRequestId(), computed, len(tokens)))
	}
	if r.err != nil {
		s.metrics.Failures.Inc()
		s.dial.Drop(peer.NodeID)
		// Aborted: the transfer failed and the request may be placed again.
		return nil, status.Error(codes.Aborted, r.err.Error())
	}
	return &tandemv1.PrefillResponse{FirstToken: &first, Computed: int32(len(tokens)), KvBytes: r.bytes}, nil
}

// release frees any KV a finished KeepKV request still holds.
func (s *Server) release(h *engine.Handle) {
	if blocks, _, ok := h.TakeKV(); ok {
		s.eng.Free(blocks)
	}
}

// layerFeed carries the layer events of a prompt's final chunk from the
// engine's step loop to the pusher. Once a final-chunk event for layer L has
// fired, layer L of every block of the prompt is final: earlier chunks wrote
// their part in earlier steps, cached prefix blocks are immutable, and the
// request finishes in this step (one-token budget), after which its blocks
// are kept for the transfer, so they cannot be preempted or reused while the
// pusher reads them.
type layerFeed struct {
	promptLen int
	events    chan finalLayer
}

type finalLayer struct {
	layer  int
	blocks []int32 // the block table, with the first event only
}

func newLayerFeed(promptLen, layers int) *layerFeed {
	return &layerFeed{promptLen: promptLen, events: make(chan finalLayer, layers)}
}

// onLayer runs on the engine's step loop: it never blocks. The buffer holds
// one final chunk's events, and a request has exactly one final chunk.
func (f *layerFeed) onLayer(ev engine.LayerEvent) {
	if ev.To != f.promptLen {
		return
	}
	fl := finalLayer{layer: ev.Layer}
	if ev.Layer == 0 {
		fl.blocks = slices.Clone(ev.Blocks)
	}
	select {
	case f.events <- fl:
	default:
	}
}

type pushResult struct {
	bytes    int64
	err      error
	released <-chan struct{} // closed when the transport no longer reads the source blocks
}

// stream reserves the destination blocks when the final chunk starts, then
// sends each layer as the engine finishes it and commits. It reads the
// source blocks but never frees them: Prefill does, once released is closed.
func (s *Server) stream(ctx context.Context, peer dialer.Peer, g transport.Grant, feed *layerFeed) pushResult {
	released := make(chan struct{})
	fail := func(err error) pushResult {
		return pushResult{err: err, released: released}
	}
	spec := s.eng.Cache().Spec()
	need := (feed.promptLen + spec.BlockSize - 1) / spec.BlockSize
	addr := peer.NodeID
	var (
		out   *transport.Outbound
		conn  transport.Conn
		start time.Time
	)
	for sent := 0; sent < spec.Layers; sent++ {
		var fl finalLayer
		select {
		case fl = <-feed.events:
		case <-ctx.Done():
			if out != nil {
				out.Abort(ctx.Err())
				s.cancel(conn, g, ctx.Err())
				return pushResult{err: ctx.Err(), released: released}
			}
			close(released)
			return fail(ctx.Err())
		}
		if out == nil {
			start = time.Now()
			var err error
			if out, conn, err = s.open(ctx, peer, g, fl, need, func() { close(released) }); err != nil {
				return fail(err)
			}
		}
		if err := out.SendLayer(ctx, fl.layer); err != nil {
			out.Abort(err)
			s.cancel(conn, g, err)
			return fail(fmt.Errorf("%w: layer %d to %s: %w", ErrTransfer, fl.layer, addr, err))
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		s.cancel(conn, g, err)
		return fail(fmt.Errorf("%w: commit to %s: %w", ErrTransfer, addr, err))
	}
	n := int64(need) * int64(spec.Layers) * int64(spec.BlockBytes())
	s.metrics.Bytes.Add(float64(n))
	s.metrics.Duration.Observe(time.Since(start).Seconds())
	s.log.Debug("prefill: pushed", "transfer", g.TransferID, "blocks", need, "bytes", n, "took", time.Since(start))
	return pushResult{bytes: n, released: released}
}

// open dials the decode worker, reserves need blocks under g's lease and
// opens the ordered push stream from the prompt's blocks. On success the
// transport calls onRelease when it no longer reads the source blocks; on
// failure onRelease has been called.
func (s *Server) open(ctx context.Context, peer dialer.Peer, g transport.Grant, fl finalLayer, need int, onRelease func()) (*transport.Outbound, transport.Conn, error) {
	addr := peer.NodeID
	if fl.layer != 0 || len(fl.blocks) < need {
		onRelease()
		return nil, nil, fmt.Errorf("%w: final chunk began at layer %d with %d of %d blocks", ErrTransfer, fl.layer, len(fl.blocks), need)
	}
	conn, err := s.dial.Dial(ctx, peer)
	if err != nil {
		onRelease()
		return nil, nil, fmt.Errorf("%w: dial %s: %w", ErrTransfer, addr, err)
	}
	lease, err := conn.Reserve(ctx, g, need)
	if err != nil {
		onRelease()
		return nil, nil, fmt.Errorf("%w: reserve %d blocks on %s: %w", ErrTransfer, need, addr, err)
	}
	pairs := make([]transport.BlockPair, need)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: fl.blocks[i], Dst: lease.Blocks[i]}
	}
	out, err := transport.Push(ctx, conn, s.eng.Cache(), transport.Plan{Grant: g, Pairs: pairs, Release: func(error) { onRelease() }})
	if err != nil {
		s.cancel(conn, g, err)
		return nil, nil, fmt.Errorf("%w: open stream to %s: %w", ErrTransfer, addr, err)
	}
	return out, conn, nil
}

// cancel tells the receiver to free a failed transfer's lease now rather
// than at expiry. Best effort: the lease expires anyway.
func (s *Server) cancel(conn transport.Conn, g transport.Grant, cause error) {
	ctx, stop := context.WithTimeout(context.Background(), time.Second)
	defer stop()
	if err := conn.Cancel(ctx, g, cause.Error()); err != nil {
		s.log.Debug("prefill: cancel transfer", "transfer", g.TransferID, "err", err)
	}
}
