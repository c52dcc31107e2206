package gateway_test

import (
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tandemserve/tandem/gateway"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// grpcClient serves g's Inference service on an in-memory listener.
func grpcClient(t *testing.T, r *fakeRouter, adjust func(*gateway.Config)) tandemv1.InferenceClient {
	t.Helper()
	g, _, _ := newGateway(t, r, adjust)
	lis := bufconn.Listen(1 << 20)
	is := gateway.NewInferenceServer(g)
	srv := grpc.NewServer(is.ServerOptions()...)
	tandemv1.RegisterInferenceServer(srv, is)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return tandemv1.NewInferenceClient(conn)
}

func TestGRPCGenerate(t *testing.T) {
	tok := testTokenizer(t)
	hello := ids(t, tok, "hello world")
	cases := []struct {
		name   string
		req    *tandemv1.GenerateRequest
		adjust func(*gateway.Config)
		md     metadata.MD
		code   codes.Code
		text   string
	}{
		{name: "prompt", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc"}, code: codes.OK, text: tok.Decode(hello)},
		{name: "chat", req: &tandemv1.GenerateRequest{Model: testModel, Messages: []*tandemv1.ChatMessage{{Role: "user", Content: "x"}}}, code: codes.OK, text: tok.Decode(hello)},
		{name: "tokens", req: &tandemv1.GenerateRequest{Model: testModel, PromptTokens: []int32{5, 6}, Sampling: &tandemv1.SamplingParams{MaxTokens: 3}}, code: codes.OK, text: tok.Decode(hello[:3])},
		{name: "unknown model", req: &tandemv1.GenerateRequest{Model: "other", Prompt: "abc"}, code: codes.NotFound},
		{name: "two prompts", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc", PromptTokens: []int32{5}}, code: codes.InvalidArgument},
		{name: "no prompt", req: &tandemv1.GenerateRequest{Model: testModel}, code: codes.InvalidArgument},
		{name: "bad top_k", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc", Sampling: &tandemv1.SamplingParams{TopK: -2}}, code: codes.InvalidArgument},
		{name: "negative max_tokens", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc", Sampling: &tandemv1.SamplingParams{MaxTokens: -1}}, code: codes.InvalidArgument},
		{name: "over context", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc", Sampling: &tandemv1.SamplingParams{MaxTokens: 1000}}, code: codes.InvalidArgument},
		{name: "overloaded", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc"}, adjust: func(c *gateway.Config) { c.MaxAdmittedTokens = 5 }, code: codes.ResourceExhausted},
		{name: "no key", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc"}, adjust: func(c *gateway.Config) { c.APIKeys = []string{"k"} }, code: codes.Unauthenticated},
		{name: "key", req: &tandemv1.GenerateRequest{Model: testModel, Prompt: "abc"}, adjust: func(c *gateway.Config) { c.APIKeys = []string{"k"} },
			md: metadata.Pairs("authorization", "Bearer k"), code: codes.OK, text: tok.Decode(hello)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := grpcClient(t, &fakeRouter{reply: hello, finish: "stop"}, tc.adjust)
			ctx := context.Background()
			if tc.md != nil {
				ctx = metadata.NewOutgoingContext(ctx, tc.md)
			}
			resp, err := c.Generate(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if err == nil && resp.GetText() != tc.text {
				t.Errorf("text %q, want %q", resp.GetText(), tc.text)
			}
			if err == nil && int(resp.GetUsage().GetCompletionTokens()) != len(resp.GetTokenIds()) {
				t.Errorf("usage %v for %d tokens", resp.GetUsage(), len(resp.GetTokenIds()))
			}
			// The streaming call validates the same way.
			stream, err := c.GenerateStream(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var text, finish string
			for {
				ch, err := stream.Recv()
				if err == io.EOF {
					break
				}
				if err != nil {
					if status.Code(err) != tc.code {
						t.Fatalf("stream code %v, want %v", status.Code(err), tc.code)
					}
					break
				}
				text += ch.GetText()
				if ch.GetFinishReason() != "" {
					finish = ch.GetFinishReason()
				}
			}
			if tc.code == codes.OK && (text != tc.text || finish == "") {
				t.Errorf("stream text %q finish %q, want %q", text, finish, tc.text)
			}
		})
	}
}

func TestGRPCInfo(t *testing.T) {
	c := grpcClient(t, &fakeRouter{}, nil)
	ctx := context.Background()
	models, err := c.ListModels(ctx, &tandemv1.ListModelsRequest{})
	if err != nil || len(models.GetModels()) != 1 || models.GetModels()[0].GetId() != testModel {
		t.Fatalf("models %v, %v", models, err)
	}
	h, err := c.Health(ctx, &tandemv1.HealthRequest{})
	if err != nil || !h.GetReady() {
		t.Fatalf("health %v, %v", h, err)
	}
	tk, err := c.Tokenize(ctx, &tandemv1.TokenizeRequest{Model: testModel, Text: "ab"})
	if err != nil || len(tk.GetTokens()) == 0 {
		t.Fatalf("tokenize %v, %v", tk, err)
	}
	if _, err := c.Tokenize(ctx, &tandemv1.TokenizeRequest{Model: "nope", Text: "ab"}); status.Code(err) != codes.NotFound {
		t.Fatalf("tokenize unknown model: %v", err)
	}
}
