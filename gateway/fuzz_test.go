package gateway_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/gateway"
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
