package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// NewHTTPHandler returns the OpenAI-compatible HTTP API of g, with metrics
// served from metrics at /metrics.
func NewHTTPHandler(g *Gateway, metrics http.Handler) http.Handler {
	h := &httpAPI{g: g}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/completions", h.auth(h.completions))
	mux.HandleFunc("POST /v1/chat/completions", h.auth(h.chat))
	mux.HandleFunc("GET /v1/models", h.auth(h.models))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /ready", h.ready)
	mux.Handle("GET /metrics", metrics)
	return mux
}

type httpAPI struct {
	g *Gateway
}

func (h *httpAPI) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if err := h.g.Authorize(strings.TrimSpace(token)); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tandem"`)
			h.fail(w, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, h.g.cfg.MaxBodyBytes)
		next(w, r)
	}
}

// fail writes err as an OpenAI error object with its mapped status.
func (h *httpAPI) fail(w http.ResponseWriter, err error) {
	code, typ := httpStatus(err)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		code, typ = http.StatusRequestEntityTooLarge, "invalid_request_error"
	}
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(h.g.cfg.RetryAfter.Seconds()))))
	}
	var body errorJSON
	body.Error.Message = err.Error()
	body.Error.Type = typ
	var fe *FieldError
	if errors.As(err, &fe) {
		body.Error.Param = &fe.Field
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

// decode reads a JSON body into v, naming the field of a type error.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fieldErr("content-type", "must be application/json, got %q", ct)
	}
	err := json.NewDecoder(r.Body).Decode(v)
	var te *json.UnmarshalTypeError
	var fe *FieldError
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe), errors.As(err, &mbe):
		return err
	case errors.As(err, &te):
		// Fields of the embedded shared struct carry its Go name.
		return fieldErr(strings.TrimPrefix(te.Field, "samplingFields."), "must be %s, got %s", te.Type, te.Value)
	}
	return fieldErr("body", "malformed JSON: %v", err)
}

func (h *httpAPI) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	in, err := req.input()
	if err != nil {
		h.fail(w, err)
		return
	}
	h.serve(w, r, in, req.Stream, req.StreamOptions != nil && req.StreamOptions.IncludeUsage, false)
}

func (h *httpAPI) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := decode(r, &req); err != nil {
		h.fail(w, err)
		return
	}
	in, err := req.input()
	if err != nil {
		h.fail(w, err)
		return
	}
	h.serve(w, r, in, req.Stream, req.StreamOptions != nil && req.StreamOptions.IncludeUsage, true)
}

// serve runs in and answers in one JSON body or as server-sent events.
func (h *httpAPI) serve(w http.ResponseWriter, r *http.Request, in Input, stream, includeUsage, chat bool) {
	id := fmt.Sprintf("cmpl-%d", time.Now().UnixNano())
	object := "text_completion"
	if chat {
		id, object = "chat"+id, "chat.completion"
	}
	created := time.Now().Unix()
	model := h.g.model.Name
	if !stream {
		res, err := h.g.Generate(r.Context(), in, nil)
		if err != nil {
			h.fail(w, err)
			return
		}
		finish := res.Finish
		var choice any = completionChoice{Text: res.Text, FinishReason: &finish}
		if chat {
			choice = chatChoice{Message: &chatMessageJSON{Role: "assistant", Content: &res.Text}, FinishReason: &finish}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(responseJSON{ID: id, Object: object, Created: created, Model: model, Choices: []any{choice}, Usage: usageOf(res)})
		return
	}

	if chat {
		object = "chat.completion.chunk"
	}
	flusher, _ := w.(http.Flusher)
	started := false
	send := func(v any) error {
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	chunk := func(text string, finish *string) responseJSON {
		var choice any = completionChoice{Text: text, FinishReason: finish}
		if chat {
			choice = chatChoice{Delta: &chatMessageJSON{Content: &text}, FinishReason: finish}
		}
		return responseJSON{ID: id, Object: object, Created: created, Model: model, Choices: []any{choice}}
	}
	sink := func(d Delta) error {
		if chat && !started {
			empty := ""
			first := responseJSON{ID: id, Object: object, Created: created, Model: model,
				Choices: []any{chatChoice{Delta: &chatMessageJSON{Role: "assistant", Content: &empty}}}}
			if err := send(first); err != nil {
				return err
			}
		}
		if d.Text == "" {
			return nil
		}
		return send(chunk(d.Text, nil))
	}
	res, err := h.g.Generate(r.Context(), in, sink)
	if err != nil {
		if !started {
			h.fail(w, err)
			return
		}
		// Headers are gone: report the failure in the stream, as OpenAI does.
		_, typ := httpStatus(err)
		send(map[string]any{"error": map[string]any{"message": err.Error(), "type": typ}})
		return
	}
	finish := res.Finish
	send(chunk("", &finish))
	if includeUsage {
		send(responseJSON{ID: id, Object: object, Created: created, Model: model, Choices: []any{}, Usage: usageOf(res)})
	}
	io.WriteString(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func (h *httpAPI) models(w http.ResponseWriter, _ *http.Request) {
	m := h.g.model
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"object": "list",
		"data": []any{map[string]any{
			"id": m.Name, "object": "model", "created": 0, "owned_by": "tandem",
			"context_length": m.ContextLength,
		}},
	})
}

func (h *httpAPI) ready(w http.ResponseWriter, r *http.Request) {
	if err := h.g.Ready(r.Context()); err != nil {
		h.fail(w, err)
		return
	}
	io.WriteString(w, "ready\n")
}
