package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/metrics"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// Engine is what a worker needs from engine.Engine.
type Engine interface {
	// Add queues a request; it is cancelled when ctx ends.
	Add(ctx context.Context, req engine.Request) (*engine.Handle, error)
	// Load reports occupancy for load reports and metrics.
	Load() engine.Load
}

var _ Engine = (*engine.Engine)(nil)

// Server serves the Worker service's Run and Load over one engine. Prefill
// and decode workers embed it and add their legs; the legs it does not serve
// answer Unimplemented.
type Server struct {
	tandemv1.UnimplementedWorkerServer
	eng   Engine
	model string
	role  string
	log   *slog.Logger
	kv    KVEndpoint
	m     *metrics.Worker
}

// SetMetrics makes the server observe engine latencies into m. Call it
// before serving.
func (s *Server) SetMetrics(m *metrics.Worker) { s.m = m }

// Metrics returns the metrics set with SetMetrics, or nil.
func (s *Server) Metrics() *metrics.Worker { return s.m }

// KVEndpoint is where a decode worker's KV receiver can be reached; load
// reports publish it so prefill workers can push to it.
type KVEndpoint struct {
	Addr   string // KVTransport gRPC address
	Socket string // shared-memory socket path (same host only)
	HostID string // transport.LocalHostID of this machine
}

// SetKVEndpoint records the KV receiver's endpoint for load reports. Call
// it before serving.
func (s *Server) SetKVEndpoint(kv KVEndpoint) { s.kv = kv }

var _ tandemv1.WorkerServer = (*Server)(nil)

// NewServer returns a Server for eng, which runs model (its model.Model.ID).
// role names the worker in load reports: colocated, prefill or decode.
func NewServer(eng Engine, model, role string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{eng: eng, model: model, role: role, log: log}
}

// Engine returns the engine the server drives.
func (s *Server) Engine() Engine { return s.eng }

// Model returns the served model's id.
func (s *Server) Model() string { return s.model }

// Run admits the request and streams its tokens until it finishes or the
// caller goes away (which cancels it in the engine and frees its blocks).
func (s *Server) Run(req *tandemv1.RunRequest, stream tandemv1.Worker_RunServer) error {
	if err := checkRun(req, s.model); err != nil {
		return ToStatus(err)
	}
	ctx := stream.Context()
	h, err := s.eng.Add(ctx, engine.Request{
		Tokens:    req.GetTokens(),
		Params:    ParamsFromProto(req.GetSampling(), 0),
		Priority:  int(req.GetPriority()),
		Generated: int(req.GetGenerated()),
	})
	if err != nil {
		return ToStatus(err)
	}
	defer h.Cancel()
	s.log.Debug("worker: run", "request", req.GetRequestId(), "engine_id", h.ID(), "tokens", len(req.GetTokens()))
	return StreamHandle(ctx, h, s.m, stream.Send)
}

// StreamHandle sends every token of h, then its finish event, observing the
// engine's latencies into m when it is not nil.
func StreamHandle(ctx context.Context, h *engine.Handle, m *metrics.Worker, send func(*tandemv1.TokenEvent) error) error {
	var last time.Time
	for {
		t, err := h.Next(ctx)
		if errors.Is(err, io.EOF) {
			_, reason, _ := h.Finish()
			return send(&tandemv1.TokenEvent{FinishReason: string(reason)})
		}
		if err != nil {
			return ToStatus(err)
		}
		if m != nil {
			now := time.Now()
			if last.IsZero() {
				added, first, _ := h.Timing()
				m.EngineTTFT.Observe(first.Sub(added).Seconds())
			} else {
				m.EngineInterToken.Observe(now.Sub(last).Seconds())
			}
			last = now
		}
		if err := send(&tandemv1.TokenEvent{Token: &t}); err != nil {
			return err
		}
	}
}

// Load reports the engine's occupancy.
func (s *Server) Load(context.Context, *tandemv1.LoadRequest) (*tandemv1.LoadResponse, error) {
	l := s.eng.Load()
	return &tandemv1.LoadResponse{
		Running: int32(l.Running), Waiting: int32(l.Waiting),
		TotalBlocks: int32(l.TotalBlocks), FreeBlocks: int32(l.FreeBlocks),
		Role: s.role, Model: s.model,
		KvAddr: s.kv.Addr, KvSocket: s.kv.Socket, HostId: s.kv.HostID,
	}, nil
}

// ToStatus maps worker and engine errors to gRPC status codes: the one place
// the worker side turns errors into codes. Context errors pass through as
// their codes so a caller that went away is not reported as a failure.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, engine.ErrCancelled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrWrongModel):
		code = codes.NotFound
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, engine.ErrInvalidRequest), errors.Is(err, engine.ErrTooLarge):
		code = codes.InvalidArgument
	case errors.Is(err, engine.ErrClosed):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
