package gateway

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/tandemserve/tandem/model/tokenizer"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/worker"
)

// InferenceServer is the gRPC edge of a Gateway.
type InferenceServer struct {
	tandemv1.UnimplementedInferenceServer
	g *Gateway
}

var _ tandemv1.InferenceServer = (*InferenceServer)(nil)

// NewInferenceServer returns the Inference service of g.
func NewInferenceServer(g *Gateway) *InferenceServer { return &InferenceServer{g: g} }

// ServerOptions returns the interceptors that authenticate every call with
// the "authorization: Bearer <key>" metadata.
func (s *InferenceServer) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			if err := s.authorize(ctx); err != nil {
				return nil, grpcStatus(err)
			}
			return next(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			if err := s.authorize(ss.Context()); err != nil {
				return grpcStatus(err)
			}
			return next(srv, ss)
		}),
	}
}

func (s *InferenceServer) authorize(ctx context.Context) error {
	var token string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			token, _ = strings.CutPrefix(v[0], "Bearer ")
		}
	}
	return s.g.Authorize(strings.TrimSpace(token))
}

func inputOf(req *tandemv1.GenerateRequest) (Input, error) {
	p := worker.ParamsFromProto(req.GetSampling(), 0)
	if req.GetSampling().GetMaxTokens() < 0 {
		return Input{}, fieldErr("sampling.max_tokens", "must be positive, got %d", req.GetSampling().GetMaxTokens())
	}
	set := 0
	for _, ok := range []bool{req.GetPrompt() != "", len(req.GetMessages()) > 0, len(req.GetPromptTokens()) > 0} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return Input{}, fieldErr("prompt", "exactly one of prompt, messages or prompt_tokens must be set")
	}
	msgs := make([]tokenizer.Message, len(req.GetMessages()))
	for i, m := range req.GetMessages() {
		msgs[i] = tokenizer.Message{Role: m.GetRole(), Content: m.GetContent()}
	}
	return Input{Model: req.GetModel(), Prompt: req.GetPrompt(), Messages: msgs, PromptTokens: req.GetPromptTokens(), Params: p, Priority: int(req.GetPriority())}, nil
}

func usageProto(r Result) *tandemv1.Usage {
	return &tandemv1.Usage{PromptTokens: int32(r.PromptTokens), CompletionTokens: int32(r.CompletionTokens), TotalTokens: int32(r.PromptTokens + r.CompletionTokens)}
}

// Generate runs a request and returns its whole output.
func (s *InferenceServer) Generate(ctx context.Context, req *tandemv1.GenerateRequest) (*tandemv1.GenerateResponse, error) {
	in, err := inputOf(req)
	if err != nil {
		return nil, grpcStatus(err)
	}
	res, err := s.g.Generate(ctx, in, nil)
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &tandemv1.GenerateResponse{Text: res.Text, TokenIds: res.Tokens, FinishReason: res.Finish, Usage: usageProto(res)}, nil
}

// GenerateStream streams a request's output as it is generated.
func (s *InferenceServer) GenerateStream(req *tandemv1.GenerateRequest, stream tandemv1.Inference_GenerateStreamServer) error {
	in, err := inputOf(req)
	if err != nil {
		return grpcStatus(err)
	}
	res, err := s.g.Generate(stream.Context(), in, func(d Delta) error {
		return stream.Send(&tandemv1.GenerateChunk{Text: d.Text, TokenIds: d.Tokens})
	})
	if err != nil {
		return grpcStatus(err)
	}
	return stream.Send(&tandemv1.GenerateChunk{FinishReason: res.Finish, Usage: usageProto(res)})
}

// Tokenize encodes text.
func (s *InferenceServer) Tokenize(_ context.Context, req *tandemv1.TokenizeRequest) (*tandemv1.TokenizeResponse, error) {
	ids, err := s.g.Tokenize(req.GetModel(), req.GetText(), req.GetAddSpecial())
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &tandemv1.TokenizeResponse{Tokens: ids}, nil
}

// ListModels lists the served model.
func (s *InferenceServer) ListModels(context.Context, *tandemv1.ListModelsRequest) (*tandemv1.ListModelsResponse, error) {
	m := s.g.model
	return &tandemv1.ListModelsResponse{Models: []*tandemv1.ModelInfo{{Id: m.Name, ContextLength: int32(m.ContextLength), VocabSize: int32(m.Vocab)}}}, nil
}

// Health reports readiness.
func (s *InferenceServer) Health(ctx context.Context, _ *tandemv1.HealthRequest) (*tandemv1.HealthResponse, error) {
	if err := s.g.Ready(ctx); err != nil {
		return &tandemv1.HealthResponse{Ready: false, Detail: err.Error()}, nil
	}
	return &tandemv1.HealthResponse{Ready: true}, nil
}
