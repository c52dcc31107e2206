package decode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/tandemserve/tandem/engine"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/worker"
)

var (
	// ErrInvalidAttach reports a malformed Attach call.
	ErrInvalidAttach = errors.New("decode: invalid attach")
	// ErrNoTransfer reports an Attach whose KV never became ready.
	ErrNoTransfer = errors.New("decode: transfer not ready")
)

// Engine is what the decode worker needs from engine.Engine.
type Engine interface {
	worker.Engine
	AddPrefilled(ctx context.Context, req engine.Request, blocks []int32, computed int) (*engine.Handle, error)
	Free(blocks []int32)
}

var _ Engine = (*engine.Engine)(nil)

// Receiver is the transport's receiving half (transport.Receiver).
type Receiver interface {
	// Ready waits until transferID's KV arrived and hands its blocks over.
	Ready(ctx context.Context, transferID string) ([]int32, error)
	// Cancel ends a transfer, freeing its blocks.
	Cancel(transferID, reason string)
}

var _ Receiver = (*transport.Receiver)(nil)

// Config configures a Server.
type Config struct {
	// ReadyTimeout bounds how long Attach waits for the KV to arrive.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// DefaultConfig returns a 30 s transfer wait.
func DefaultConfig() Config { return Config{ReadyTimeout: 30 * time.Second} }

// Server is the decode worker's Worker service: Run (from worker.Server),
// Attach and Load.
type Server struct {
	*worker.Server
	cfg  Config
	eng  Engine
	recv Receiver
	log  *slog.Logger
}

var _ tandemv1.WorkerServer = (*Server)(nil)

// NewServer returns a decode server over eng and recv, serving model.
func NewServer(cfg Config, eng Engine, recv Receiver, model string) (*Server, error) {
	if cfg.ReadyTimeout <= 0 || eng == nil || recv == nil {
		return nil, fmt.Errorf("%w: bad config or nil dependency", ErrInvalidAttach)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{Server: worker.NewServer(eng, model, "decode", log), cfg: cfg, eng: eng, recv: recv, log: log}, nil
}

// Attach waits for the first token (sent by the gateway once the prefill
// returned it, so after the transfer committed), claims the transfer's
// blocks, admits the sequence and streams its following tokens. The first message carries the
// request and transfer id; the second the first token the prefill sampled.
func (s *Server) Attach(stream grpc.BidiStreamingServer[tandemv1.AttachRequest, tandemv1.TokenEvent]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	run, id := first.GetRun(), first.GetTransferId()
	if run == nil || id == "" || len(run.GetTokens()) == 0 || run.GetGenerated() != 0 || run.GetSampling().GetMaxTokens() < 2 {
		s.recv.Cancel(id, "bad attach")
		return worker.ToStatus(fmt.Errorf("%w: %w: need a request, a transfer id and max_tokens >= 2", ErrInvalidAttach, worker.ErrInvalidRequest))
	}
	if run.GetModel() != "" && run.GetModel() != s.Model() {
		s.recv.Cancel(id, "wrong model")
		return worker.ToStatus(fmt.Errorf("%w: %q", worker.ErrWrongModel, run.GetModel()))
	}
	// The first token arrives on this stream once the prefill returned it.
	// The reader ends when the handler returns, which ends the stream.
	tokCh := make(chan int32, 1)
	errCh := make(chan error, 1)
	go func() {
		m, err := stream.Recv()
		if err != nil {
			errCh <- err
			return
		}
		if m.FirstToken == nil {
			errCh <- fmt.Errorf("%w: %w: second message has no first token", ErrInvalidAttach, worker.ErrInvalidRequest)
			return
		}
		tokCh <- m.GetFirstToken()
	}()
	// The prefill returns the first token only after the transfer
	// committed, so once it arrives the KV is here (or its transfer failed).
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	var tok int32
	select {
	case tok = <-tokCh:
	case err := <-errCh:
		s.recv.Cancel(id, "attach ended")
		return worker.ToStatus(err)
	case <-wctx.Done():
		s.recv.Cancel(id, "no first token")
		return worker.ToStatus(fmt.Errorf("%w: waiting for the first token: %w", ErrNoTransfer, wctx.Err()))
	}
	blocks, err := s.recv.Ready(wctx, id)
	if err != nil {
		s.recv.Cancel(id, "attach ended")
		return worker.ToStatus(fmt.Errorf("%w: %s: %w", ErrNoTransfer, id, err))
	}
	prompt := run.GetTokens()
	tokens := append(append(make([]int32, 0, len(prompt)+1), prompt...), tok)
	h, err := s.eng.AddPrefilled(ctx, engine.Request{
		Tokens: tokens, Generated: 1, Priority: int(run.GetPriority()),
		Params: worker.ParamsFromProto(run.GetSampling(), 0),
	}, blocks, len(prompt))
	if err != nil {
		s.eng.Free(blocks)
		return worker.ToStatus(err)
	}
	defer h.Cancel()
	s.log.Debug("decode: admitted", "request", run.GetRequestId(), "transfer", id, "blocks", len(blocks))
	return worker.StreamHandle(ctx, h, s.Metrics(), stream.Send)
}
