//go:build e2e

package e2e

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/coordinator/client"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/worker"
)

const apiKey = "sk-e2e-test-key"

// cluster is a running `tandem dev`.
type cluster struct {
	http, grpc, model string
}

func startDev(t *testing.T, mode string) cluster {
	t.Helper()
	_, model := env(t)
	p := start(t, []string{"TANDEM_API_KEYS=" + apiKey}, "dev", "--model", model, "--mode", mode,
		"--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--threads", "1",
		"--max-admitted-tokens", "3000", "--log-level", "warn")
	h := p.waitFor(t, `OpenAI HTTP API\s+http://(\S+)/v1`)
	g := p.waitFor(t, `gRPC Inference\s+(\S+)`)
	return cluster{http: "http://" + h[1], grpc: g[1], model: strings.TrimSuffix(filepath.Base(model), ".gguf")}
}

// TestGreedyMatchesGenerate checks that greedy streams through the cluster,
// disaggregated and colocated, are identical to `tandem generate`.
func TestGreedyMatchesGenerate(t *testing.T) {
	cases := []struct {
		name      string
		prompt    string
		chat      bool
		maxTokens int
	}{
		{"plain", "The capital of France is", false, 24},
		{"chat", "What is two plus two?", true, 24},
		{"long prompt", strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20) + "The fox", false, 16},
	}
	want := map[string]string{}
	for _, tc := range cases {
		want[tc.name] = generate(t, tc.prompt, tc.maxTokens, tc.chat)
	}
	for _, mode := range []string{"disaggregated", "colocated"} {
		t.Run(mode, func(t *testing.T) {
			c := startDev(t, mode)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					path, body := "/v1/completions", map[string]any{"model": c.model, "prompt": tc.prompt, "max_tokens": tc.maxTokens}
					if tc.chat {
						path, body = "/v1/chat/completions", map[string]any{"model": c.model, "max_tokens": tc.maxTokens,
							"messages": []map[string]string{{"role": "user", "content": tc.prompt}}}
					}
					code, _, out := post(t, c.http+path, apiKey, body)
					if code != 200 {
						t.Fatalf("status %d: %s", code, out)
					}
					res := decodeCompletion(t, out)
					got := res.Choices[0].Text + res.Choices[0].Message.Content
					if got != want[tc.name] {
						t.Errorf("cluster %q\ngenerate %q", got, want[tc.name])
					}
					if !tc.chat {
						body["stream"] = true
						text, _ := streamText(t, c.http+path, apiKey, body, nil)
						if text != want[tc.name] {
							t.Errorf("stream %q\ngenerate %q", text, want[tc.name])
						}
					}
				})
			}
		})
	}
}

// TestValidation checks every input error the API promises, over HTTP and gRPC.
func TestValidation(t *testing.T) {
	c := startDev(t, "disaggregated")
	url := c.http + "/v1/chat/completions"
	msgs := []map[string]string{{"role": "user", "content": "hi"}}
	req := func(extra map[string]any) map[string]any {
		b := map[string]any{"model": c.model, "messages": msgs, "max_tokens": 4}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	cases := []struct {
		name   string
		key    string
		body   any
		status int
		param  string
	}{
		{name: "ok", key: apiKey, body: req(nil), status: 200},
		{name: "no api key", body: req(nil), status: 401},
		{name: "wrong api key", key: "sk-wrong", body: req(nil), status: 401},
		{name: "unknown model", key: apiKey, body: req(map[string]any{"model": "gpt-nope"}), status: 404},
		{name: "bad temperature", key: apiKey, body: req(map[string]any{"temperature": -1}), status: 400, param: "temperature"},
		{name: "bad top_p", key: apiKey, body: req(map[string]any{"top_p": 2}), status: 400, param: "top_p"},
		{name: "bad max_tokens", key: apiKey, body: req(map[string]any{"max_tokens": 0}), status: 400, param: "max_tokens"},
		{name: "n above one", key: apiKey, body: req(map[string]any{"n": 3}), status: 400, param: "n"},
		{name: "bad role", key: apiKey, body: req(map[string]any{"messages": []map[string]string{{"role": "robot", "content": "x"}}}), status: 400, param: "messages[0].role"},
		{name: "over context", key: apiKey, body: req(map[string]any{"max_tokens": 100000}), status: 400},
		{name: "malformed json", key: apiKey, body: `{"model":`, status: 400},
		{name: "body too large", key: apiKey, body: req(map[string]any{"messages": []map[string]string{{"role": "user", "content": strings.Repeat("x", 2<<20)}}}), status: 413},
		{name: "overloaded", key: apiKey, body: req(map[string]any{"max_tokens": 3500}), status: 429},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, out := post(t, url, tc.key, tc.body)
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, out)
			}
			if code == 200 {
				return
			}
			res := decodeCompletion(t, out)
			if res.Error == nil || res.Error.Message == "" {
				t.Fatalf("no error object: %s", out)
			}
			if tc.param != "" && (res.Error.Param == nil || *res.Error.Param != tc.param) {
				t.Errorf("param %v, want %q", res.Error.Param, tc.param)
			}
			if code == 429 && hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}

	conn, err := grpc.NewClient(c.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := tandemv1.NewInferenceClient(conn)
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+apiKey)
	grpcCases := []struct {
		name string
		ctx  context.Context
		req  *tandemv1.GenerateRequest
		code codes.Code
	}{
		{"ok", authed, &tandemv1.GenerateRequest{Model: c.model, Prompt: "Hello", Sampling: &tandemv1.SamplingParams{MaxTokens: 4}}, codes.OK},
		{"no key", context.Background(), &tandemv1.GenerateRequest{Model: c.model, Prompt: "Hello"}, codes.Unauthenticated},
		{"unknown model", authed, &tandemv1.GenerateRequest{Model: "nope", Prompt: "Hello"}, codes.NotFound},
		{"bad min_p", authed, &tandemv1.GenerateRequest{Model: c.model, Prompt: "Hello", Sampling: &tandemv1.SamplingParams{MinP: 3}}, codes.InvalidArgument},
		{"over context", authed, &tandemv1.GenerateRequest{Model: c.model, Prompt: "Hello", Sampling: &tandemv1.SamplingParams{MaxTokens: 100000}}, codes.InvalidArgument},
		{"overloaded", authed, &tandemv1.GenerateRequest{Model: c.model, Prompt: "Hello", Sampling: &tandemv1.SamplingParams{MaxTokens: 3500}}, codes.ResourceExhausted},
	}
	for _, tc := range grpcCases {
		t.Run("grpc "+tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tc.ctx, time.Minute)
			defer cancel()
			resp, err := cl.Generate(ctx, tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if err == nil && resp.GetUsage().GetCompletionTokens() == 0 {
				t.Errorf("no tokens: %v", resp)
			}
		})
	}
}

// TestDecodeKilledMidStream kills the decode worker serving a streaming
// request; the client must still receive the complete, correct stream. Every
// role runs as its own process; in disaggregated mode KV blocks cross
// processes through the transport's network backend.
func TestDecodeKilledMidStream(t *testing.T) {
	_, model := env(t)
	prompt, n := "Once upon a time, in a small village by the sea,", 48
	want := generate(t, prompt, n, false)
	secret := []string{"TANDEM_CLUSTER_SECRET=e2e-secret-0123456789abcdef0123456789"}
	for _, mode := range []string{"colocated", "disaggregated"} {
		t.Run(mode, func(t *testing.T) {
			// Disaggregated, a coordinator places requests: workers join it
			// and the gateway is given no worker list at all.
			var join []string
			if mode == "disaggregated" {
				join = []string{"--coordinator", startCoordinator(t, secret)}
			}
			var decodes []*proc
			var addrs []string
			for range 2 {
				p := start(t, secret, append([]string{"decode", "--model", model, "--listen", "127.0.0.1:0", "--threads", "1", "--log-level", "warn",
					"--kv-listen", "127.0.0.1:0", "--kv-insecure"}, join...)...)
				addrs = append(addrs, p.waitFor(t, `decode worker listening grpc=(\S+)`)[1])
				decodes = append(decodes, p)
			}
			args := []string{"gateway", "--model", model, "--mode", mode,
				"--http-listen", "127.0.0.1:0", "--grpc-listen", "", "--log-level", "warn"}
			if mode == "disaggregated" {
				p := start(t, secret, append([]string{"prefill", "--model", model, "--listen", "127.0.0.1:0", "--threads", "1", "--log-level", "warn", "--kv-insecure"}, join...)...)
				p.waitFor(t, `prefill worker listening grpc=(\S+)`)
				args = append(args, join...)
			} else {
				args = append(args, "--decode", strings.Join(addrs, ","))
			}
			gw := start(t, secret, args...)
			url := "http://" + gw.waitFor(t, `gateway listening http=(\S+)`)[1]

			clients := make([]*worker.Client, len(addrs))
			for i, a := range addrs {
				c, err := worker.Dial(a)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				clients[i] = c
			}
			killed := -1
			body := map[string]any{"model": strings.TrimSuffix(filepath.Base(model), ".gguf"), "prompt": prompt, "max_tokens": n, "stream": true}
			text, _ := streamText(t, url+"/v1/completions", "", body, func(k int) {
				if k != 5 {
					return
				}
				for i, c := range clients {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					l, err := c.Load(ctx)
					cancel()
					if err == nil && l.GetRunning()+l.GetWaiting() > 0 {
						decodes[i].kill()
						killed = i
						return
					}
				}
			})
			if killed < 0 {
				t.Fatal("no decode worker was running the request when the stream was 5 chunks in")
			}
			if text != want {
				t.Errorf("after killing decode %d the stream was\n%q\nwant\n%q", killed, text, want)
			}
			// The surviving worker serves the next request normally.
			delete(body, "stream")
			code, _, out := post(t, url+"/v1/completions", "", body)
			if code != 200 {
				t.Fatalf("after the kill: status %d: %s", code, out)
			}
			if res := decodeCompletion(t, out); res.Choices[0].Text != want {
				t.Errorf("after the kill: %q, want %q", res.Choices[0].Text, want)
			}
		})
	}
}

// startCoordinator runs a one-node coordinator and waits until it leads.
func startCoordinator(t *testing.T, secret []string) string {
	t.Helper()
	var addrs [3]string
	for i := range addrs {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = lis.Addr().String()
		lis.Close()
	}
	start(t, secret, "coordinator", "--id", "c1", "--data-dir", t.TempDir(), "--bootstrap",
		"--grpc-addr", addrs[0], "--raft-addr", addrs[1], "--gossip-addr", addrs[2], "--log-level", "warn")
	cl, err := client.New(client.Config{Addrs: []string{addrs[0]}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cl.Status(ctx)
		cancel()
		if err == nil && st.GetLeaderId() != "" {
			return addrs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator never led: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOpenAIClient drives the cluster with the official openai package.
func TestOpenAIClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	if exec.Command(py, "-c", "import openai").Run() != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := exec.CommandContext(ctx, py, "-m", "pip", "install", "--quiet", "openai").CombinedOutput(); err != nil {
			t.Skipf("openai package missing and pip install openai failed: %v: %s", err, tail(string(out), 500))
		}
	}
	c := startDev(t, "disaggregated")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "../../scripts/openai-client-check.py", c.http+"/v1", apiKey, c.model).CombinedOutput()
	if err != nil {
		t.Fatalf("openai client check: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ok") {
		t.Fatalf("unexpected output: %s", out)
	}
}
