package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// benchRequest is one request of a load run.
type benchRequest struct {
	prompt    []int32
	maxTokens int
}

// benchResult is what one request measured. Token times are when each
// streamed piece arrived.
type benchResult struct {
	start  time.Time
	tokens []time.Time
	output int // completion tokens as reported by the server
	err    error
}

// benchClient sends one streaming request and times its pieces.
type benchClient interface {
	do(ctx context.Context, r benchRequest) benchResult
	close()
}

type httpBench struct {
	url, model, key string
	hc              *http.Client
}

func (c *httpBench) close() { c.hc.CloseIdleConnections() }

func (c *httpBench) do(ctx context.Context, r benchRequest) benchResult {
	res := benchResult{start: time.Now()}
	body, _ := json.Marshal(map[string]any{
		"model": c.model, "prompt": r.prompt, "max_tokens": r.maxTokens, "ignore_eos": true,
		"stream": true, "stream_options": map[string]bool{"include_usage": true},
	})
	req, err := http.NewRequestWithContext(ctx, "POST", c.url+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		res.err = fmt.Errorf("bench serve: status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		return res
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if d == "[DONE]" {
			return res
		}
		var ev struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(d), &ev); err != nil {
			res.err = fmt.Errorf("bench serve: bad event %q: %w", d, err)
			return res
		}
		if ev.Error != nil {
			res.err = errors.New("bench serve: " + ev.Error.Message)
			return res
		}
		if ev.Usage != nil {
			res.output = ev.Usage.CompletionTokens
		}
		for _, ch := range ev.Choices {
			if ch.Text != "" {
				res.tokens = append(res.tokens, time.Now())
			}
		}
	}
	res.err = fmt.Errorf("bench serve: stream ended without [DONE]: %v", sc.Err())
	return res
}

type grpcBench struct {
	model, key string
	conn       *grpc.ClientConn
	rpc        tandemv1.InferenceClient
}

func newGRPCBench(addr, model, key string) (*grpcBench, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &grpcBench{model: model, key: key, conn: conn, rpc: tandemv1.NewInferenceClient(conn)}, nil
}

func (c *grpcBench) close() { c.conn.Close() }

func (c *grpcBench) do(ctx context.Context, r benchRequest) benchResult {
	res := benchResult{start: time.Now()}
	if c.key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.key)
	}
	stream, err := c.rpc.GenerateStream(ctx, &tandemv1.GenerateRequest{
		Model: c.model, PromptTokens: r.prompt,
		Sampling: &tandemv1.SamplingParams{MaxTokens: int32(r.maxTokens), IgnoreEos: true},
	})
	if err != nil {
		res.err = err
		return res
	}
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
		// gRPC chunks carry token ids: time every token, so inter-token
		// latency is per token even when text is held back.
		now := time.Now()
		for range ch.GetTokenIds() {
			res.tokens = append(res.tokens, now)
		}
		if u := ch.GetUsage(); u != nil {
			res.output = int(u.GetCompletionTokens())
		}
	}
}
