// Package prefill is the prefill worker: it computes prompts' KV in its own
// continuous batch (with its own prefix cache) and hands each prompt's KV to
// the decode worker the request was placed on.
//
// The model (docs/request-lifecycle.md): Prefill admits the prompt into the
// engine with KeepKV and a one-token budget. When the engine has computed the
// prompt and sampled the first token, the worker reserves destination blocks
// on the decode worker through the KV transport (only now: reserving while the
// request queued here would charge this worker's queueing to decode memory),
// pushes the blocks layer by layer on one ordered stream that ends with the
// commit, releases its own references (the blocks stay in its prefix cache,
// unpinned) and returns the first token. A failed transfer fails the call with
// the transport's typed error; the gateway decides whether to retry.
package prefill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	h, err := s.eng.Add(ctx, engine.Request{Tokens: run.GetTokens(), Params: p, Priority: int(run.GetPriority()), KeepKV: true})
	if err != nil {
		return nil, worker.ToStatus(err)
	}
	// On every early return the request is cancelled if still running,
	// then whatever KV it kept is released (defers run last first). After
	// a successful TakeKV there is nothing left to release.
	defer s.release(h)
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
	blocks, computed, ok := h.TakeKV()
	if !ok {
		return nil, worker.ToStatus(fmt.Errorf("prefill: request %s kept no KV", run.GetRequestId()))
	}
	grant := transport.Grant{TransferID: req.GetTransferId(), Epoch: req.GetEpoch(), Expiry: time.Unix(0, req.GetExpiryUnixNano()), Token: req.GetToken()}
	peer := dialer.Peer{NodeID: req.GetDecodeAddr(), HostID: req.GetDecodeHostId(), GRPCAddr: req.GetDecodeKvAddr(), ShmSocket: req.GetDecodeKvSocket()}
	n, err := s.push(ctx, peer, grant, blocks, computed)
	if err != nil {
		s.metrics.Failures.Inc()
		s.dial.Drop(peer.NodeID)
		// Aborted: the transfer failed and the request may be placed again.
		return nil, status.Error(codes.Aborted, err.Error())
	}
	return &tandemv1.PrefillResponse{FirstToken: &first, Computed: int32(computed), KvBytes: n}, nil
}

// release frees any KV a finished KeepKV request still holds.
func (s *Server) release(h *engine.Handle) {
	if blocks, _, ok := h.TakeKV(); ok {
		s.eng.Free(blocks)
	}
}

// push moves the blocks holding computed tokens to the decode worker. It owns
// blocks and frees them exactly once, when the transfer ends either way.
func (s *Server) push(ctx context.Context, peer dialer.Peer, g transport.Grant, blocks []int32, computed int) (int64, error) {
	addr := peer.NodeID
	start := time.Now()
	spec := s.eng.Cache().Spec()
	need := (computed + spec.BlockSize - 1) / spec.BlockSize
	if need > len(blocks) {
		s.eng.Free(blocks)
		return 0, fmt.Errorf("%w: %d tokens need %d blocks, kept %d", ErrTransfer, computed, need, len(blocks))
	}
	conn, err := s.dial.Dial(ctx, peer)
	if err != nil {
		s.eng.Free(blocks)
		return 0, fmt.Errorf("%w: dial %s: %w", ErrTransfer, addr, err)
	}
	lease, err := conn.Reserve(ctx, g, need)
	if err != nil {
		s.eng.Free(blocks)
		return 0, fmt.Errorf("%w: reserve %d blocks on %s: %w", ErrTransfer, need, addr, err)
	}
	pairs := make([]transport.BlockPair, need)
	for i := range pairs {
		pairs[i] = transport.BlockPair{Src: blocks[i], Dst: lease.Blocks[i]}
	}
	// From here the transfer's Release frees the source blocks.
	out, err := transport.Push(ctx, conn, s.eng.Cache(), transport.Plan{Grant: g, Pairs: pairs, Release: func(error) { s.eng.Free(blocks) }})
	if err != nil {
		s.cancel(conn, g, err)
		return 0, fmt.Errorf("%w: open stream to %s: %w", ErrTransfer, addr, err)
	}
	for layer := range spec.Layers {
		if err := out.SendLayer(ctx, layer); err != nil {
			out.Abort(err)
			s.cancel(conn, g, err)
			return 0, fmt.Errorf("%w: layer %d to %s: %w", ErrTransfer, layer, addr, err)
		}
	}
	if _, err := out.Commit(ctx); err != nil {
		s.cancel(conn, g, err)
		return 0, fmt.Errorf("%w: commit to %s: %w", ErrTransfer, addr, err)
	}
	n := int64(need) * int64(spec.Layers) * int64(spec.BlockBytes())
	s.metrics.Bytes.Add(float64(n))
	s.metrics.Duration.Observe(time.Since(start).Seconds())
	s.log.Debug("prefill: pushed", "transfer", g.TransferID, "blocks", need, "bytes", n, "took", time.Since(start))
	return n, nil
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
