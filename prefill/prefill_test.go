package prefill_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
	"github.com/tandemserve/tandem/prefill"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/dialer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errNoRoute = errors.New("no route")

type noRoute struct{}

func (noRoute) Dial(context.Context, dialer.Peer) (transport.Conn, error) { return nil, errNoRoute }

func (noRoute) Drop(string) {}

func startEngine(t *testing.T) *engine.Engine {
	t.Helper()
	cfg := llamatest.TinyConfig()
	src, err := llamatest.Random(cfg, quant.F32, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := llama.New(cfg, ref.New(), src)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := m.Backend().NewKVCache(cfg.KVSpec(32, 4, kernels.KVF16))
	if err != nil {
		t.Fatal(err)
	}
	ec := engine.DefaultConfig()
	ec.Vocab, ec.ModelID = cfg.Vocab, "tiny"
	ec.Scheduler.MaxSeqLen = cfg.ContextLength
	e, err := engine.New(ec, m, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		cache.Close()
	})
	return e
}

func TestPrefillFailures(t *testing.T) {
	e := startEngine(t)
	tm := metrics.NewTransfer(metrics.NewRegistry())
	s, err := prefill.NewServer(e, noRoute{}, "tiny", tm, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := func(tokens ...int32) *tandemv1.RunRequest {
		return &tandemv1.RunRequest{RequestId: "r", Tokens: tokens, Sampling: &tandemv1.SamplingParams{MaxTokens: 4}}
	}
	grant := func(r *tandemv1.RunRequest) *tandemv1.PrefillRequest {
		return &tandemv1.PrefillRequest{Run: r, DecodeAddr: "decode:1", TransferId: "x", Epoch: 1, ExpiryUnixNano: time.Now().Add(time.Minute).UnixNano(), Token: []byte("t")}
	}
	resumed := run(5, 6, 7)
	resumed.Generated = 1
	wrong := run(5)
	wrong.Model = "big"
	cases := []struct {
		name     string
		req      *tandemv1.PrefillRequest
		code     codes.Code
		failures float64
	}{
		{"no run", &tandemv1.PrefillRequest{DecodeAddr: "d", TransferId: "x", Token: []byte("t")}, codes.InvalidArgument, 0},
		{"no grant", &tandemv1.PrefillRequest{Run: run(5), DecodeAddr: "d"}, codes.InvalidArgument, 0},
		{"resumed request", grant(resumed), codes.InvalidArgument, 0},
		{"wrong model", grant(wrong), codes.NotFound, 0},
		{"bad sampling", grant(&tandemv1.RunRequest{Tokens: []int32{5}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4, TopP: 2}}), codes.InvalidArgument, 0},
		{"unreachable decode", grant(run(5, 6, 7, 8, 9, 10)), codes.Aborted, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := counter(t, tm.Failures)
			_, err := s.Prefill(context.Background(), tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if got := counter(t, tm.Failures) - before; got != tc.failures {
				t.Errorf("failures counted %v, want %v", got, tc.failures)
			}
			// Whatever failed, the prefill's own blocks are released.
			if st := e.BlockManager().Stats(); st.Held != 0 {
				t.Errorf("%d blocks still held", st.Held)
			}
		})
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestPrefillFirstTokenEnds checks a request whose first sampled token is a
// stop token: nothing is pushed and every block is released.
func TestPrefillFirstTokenEnds(t *testing.T) {
	e := startEngine(t)
	prompt := []int32{5, 9, 13, 17, 21, 25}
	p := sample.DefaultParams()
	p.MaxTokens = 1
	h, err := e.Add(context.Background(), engine.Request{Tokens: prompt, Params: p})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := h.Collect(context.Background())
	if err != nil || len(out) != 1 {
		t.Fatalf("reference: %v, %v", out, err)
	}
	s, err := prefill.NewServer(e, noRoute{}, "tiny", metrics.NewTransfer(metrics.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Prefill(context.Background(), &tandemv1.PrefillRequest{
		Run:        &tandemv1.RunRequest{Tokens: prompt, Sampling: &tandemv1.SamplingParams{MaxTokens: 8, StopTokenIds: []int32{out[0]}}},
		DecodeAddr: "decode:1", TransferId: "x", Epoch: 1, ExpiryUnixNano: time.Now().Add(time.Minute).UnixNano(), Token: []byte("t"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.FirstToken != nil || resp.GetFinishReason() != "stop" {
		t.Errorf("response %v, want no first token and finish stop", resp)
	}
	if st := e.BlockManager().Stats(); st.Held != 0 {
		t.Errorf("%d blocks still held", st.Held)
	}
}
