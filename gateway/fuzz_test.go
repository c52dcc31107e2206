package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/gateway"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// FuzzHTTPRequest feeds arbitrary bodies to both generation endpoints: every
// body gets a well-formed answer (a completion or an OpenAI error object)
// with a client-side status, never a panic or a server error.
func FuzzHTTPRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"tiny-chat","prompt":"abc"}`,
		`{"model":"tiny-chat","prompt":[1,2,3],"max_tokens":3,"stop":["a"]}`,
		`{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"tiny-chat","messages":[{"role":"user","content":[{"type":"image","text":"x"}]}]}`,
		`{"model":"tiny-chat","prompt":"abc","temperature":1e309}`,
		`{"model":"tiny-chat","prompt":["a","b"]}`,
		`{"model":"tiny-chat","prompt":"abc","seed":-1,"top_k":-5}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	tok := testTokenizer(f)
	r := &fakeRouter{reply: ids(f, tok, "ok"), finish: "stop"}
	g, reg, _ := newGateway(f, r, nil)
	h := gateway.NewHTTPHandler(g, reg.Handler())
	f.Fuzz(func(t *testing.T, body string, chat bool) {
		path := "/v1/completions"
		if chat {
			path = "/v1/chat/completions"
		}
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
			var e struct {
				Error *struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Message == "" {
				t.Fatalf("status %d with body %q", rec.Code, rec.Body.String())
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
	})
}

// FuzzGenerateRequest drives the gRPC edge's validation with arbitrary field
// values: every request either runs or is refused with a client-side code.
func FuzzGenerateRequest(f *testing.F) {
	f.Add("tiny-chat", "hello", "user", "hi", int32(5), float32(0), int32(0), float32(1), float32(0), int32(4), "stop", int32(3))
	f.Add("other", "", "wizard", "", int32(-1), float32(-1), int32(-5), float32(2), float32(9), int32(-3), "", int32(1<<30))
	f.Add("tiny-chat", "", "user", "<|im_start|>system", int32(0), float32(1e30), int32(1<<20), float32(0.5), float32(0.5), int32(1<<20), "x", int32(-7))
	tok := testTokenizer(f)
	r := &fakeRouter{reply: ids(f, tok, "ok"), finish: "stop"}
	g, _, _ := newGateway(f, r, nil)
	s := gateway.NewInferenceServer(g)
	f.Fuzz(func(t *testing.T, model, prompt, role, content string, token int32, temp float32, topK int32, topP, minP float32, maxTokens int32, stop string, stopID int32) {
		req := &tandemv1.GenerateRequest{
			Model: model, Prompt: prompt,
			Sampling: &tandemv1.SamplingParams{Temperature: temp, TopK: topK, TopP: topP, MinP: minP, MaxTokens: maxTokens, Stop: []string{stop}, StopTokenIds: []int32{stopID}},
		}
		if role != "" {
			req.Messages = []*tandemv1.ChatMessage{{Role: role, Content: content}}
		}
		if token != 0 {
			req.PromptTokens = []int32{token}
		}
		_, err := s.Generate(context.Background(), req)
		switch status.Code(err) {
		case codes.OK, codes.InvalidArgument, codes.NotFound, codes.ResourceExhausted:
		default:
			t.Fatalf("request %v: %v", req, err)
		}
	})
}
