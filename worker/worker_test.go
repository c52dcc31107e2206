package worker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	dto "github.com/prometheus/client_model/go"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParamsRoundTrip(t *testing.T) {
	seeded := sample.DefaultParams()
	seeded.Seed, seeded.HasSeed, seeded.Temperature, seeded.TopK, seeded.Stop = 9, true, 0.7, 5, []string{"x"}
	cases := []struct {
		name string
		p    sample.Params
	}{
		{"default", sample.DefaultParams()},
		{"seeded", seeded},
		{"penalties", sample.Params{TopP: 0.5, MinP: 0.1, RepetitionPenalty: 1.2, RepeatLastN: 32, FrequencyPenalty: 0.5, PresencePenalty: -0.5, MaxTokens: 3, StopTokenIDs: []int32{4}, IgnoreEOS: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := worker.ParamsFromProto(worker.ParamsToProto(tc.p), 99)
			if diff := cmp.Diff(tc.p, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	// Absent parameters and unset fields take the defaults.
	want := sample.DefaultParams()
	want.MaxTokens = 12
	if diff := cmp.Diff(want, worker.ParamsFromProto(nil, 12)); diff != "" {
		t.Errorf("nil params (-want +got):\n%s", diff)
	}
	// On the wire zero means off: repeat_last_n 0 stays 0.
	empty := want
	empty.RepeatLastN = 0
	if diff := cmp.Diff(empty, worker.ParamsFromProto(&tandemv1.SamplingParams{}, 12)); diff != "" {
		t.Errorf("empty params (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&tandemv1.SamplingParams{TopP: 1, RepetitionPenalty: 1, RepeatLastN: 64, MaxTokens: 12}, worker.ParamsToProto(want), protocmp.Transform()); diff != "" {
		t.Errorf("to proto (-want +got):\n%s", diff)
	}
}

// startServer serves a worker over a tiny random-weight model.
func startServer(t *testing.T) (*worker.Client, *engine.Engine, *metrics.Worker) {
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wm, err := metrics.NewWorker(metrics.NewRegistry(), "colocated")
	if err != nil {
		t.Fatal(err)
	}
	ws := worker.NewServer(e, "tiny", "colocated", nil)
	ws.SetMetrics(wm)
	srv := grpc.NewServer()
	tandemv1.RegisterWorkerServer(srv, ws)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	c, err := worker.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		srv.Stop()
		<-done
		e.Close()
		cache.Close()
	})
	return c, e, wm
}

func TestRun(t *testing.T) {
	c, e, wm := startServer(t)
	ctx := context.Background()
	sp := &tandemv1.SamplingParams{MaxTokens: 6}
	cases := []struct {
		name string
		req  *tandemv1.RunRequest
		code codes.Code
	}{
		{"ok", &tandemv1.RunRequest{Tokens: []int32{5, 6, 7}, Sampling: sp}, codes.OK},
		{"named model", &tandemv1.RunRequest{Model: "tiny", Tokens: []int32{5, 6, 7}, Sampling: sp}, codes.OK},
		{"wrong model", &tandemv1.RunRequest{Model: "big", Tokens: []int32{5}, Sampling: sp}, codes.NotFound},
		{"empty prompt", &tandemv1.RunRequest{Sampling: sp}, codes.InvalidArgument},
		{"no max tokens", &tandemv1.RunRequest{Tokens: []int32{5}}, codes.InvalidArgument},
		{"generated past prompt", &tandemv1.RunRequest{Tokens: []int32{5}, Generated: 1, Sampling: sp}, codes.InvalidArgument},
		{"token outside vocabulary", &tandemv1.RunRequest{Tokens: []int32{5, 1000}, Sampling: sp}, codes.InvalidArgument},
		{"bad sampling", &tandemv1.RunRequest{Tokens: []int32{5}, Sampling: &tandemv1.SamplingParams{MaxTokens: 3, Temperature: -1}}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []int32
			finish, err := c.Run(ctx, tc.req, func(t int32) error { got = append(got, t); return nil })
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if err != nil {
				return
			}
			h, err := e.Add(ctx, engine.Request{Tokens: tc.req.GetTokens(), Params: worker.ParamsFromProto(tc.req.GetSampling(), 0)})
			if err != nil {
				t.Fatal(err)
			}
			want, reason, err := h.Collect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tokens (-engine +worker):\n%s", diff)
			}
			if finish != string(reason) {
				t.Errorf("finish %q, want %q", finish, reason)
			}
		})
	}
	// An emit error cancels the request and comes back unchanged.
	stop := errors.New("enough")
	if _, err := c.Run(ctx, &tandemv1.RunRequest{Tokens: []int32{5}, Sampling: &tandemv1.SamplingParams{MaxTokens: 50}}, func(int32) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("emit error: %v", err)
	}
	// Two successful runs of six tokens each were observed at the engine.
	var m dto.Metric
	wm.EngineTTFT.Write(&m)
	if got := m.GetHistogram().GetSampleCount(); got < 2 {
		t.Errorf("engine TTFT observed %d times, want at least 2", got)
	}
	wm.EngineInterToken.Write(&m)
	if got := m.GetHistogram().GetSampleCount(); got < 10 {
		t.Errorf("engine inter-token latency observed %d times, want at least 10", got)
	}
	load, err := c.Load(ctx)
	if err != nil || load.GetRole() != "colocated" || load.GetModel() != "tiny" || load.GetTotalBlocks() != 32 {
		t.Fatalf("load %v, %v", load, err)
	}
}

type events []*tandemv1.TokenEvent

func (e *events) Recv() (*tandemv1.TokenEvent, error) {
	if len(*e) == 0 {
		return nil, io.EOF
	}
	ev := (*e)[0]
	*e = (*e)[1:]
	return ev, nil
}

func TestConsume(t *testing.T) {
	tok := func(v int32) *tandemv1.TokenEvent { return &tandemv1.TokenEvent{Token: &v} }
	cases := []struct {
		name   string
		evs    events
		want   []int32
		finish string
		err    error
	}{
		{"finished", events{tok(1), tok(2), {FinishReason: "stop"}}, []int32{1, 2}, "stop", nil},
		{"cut off", events{tok(1)}, []int32{1}, "", worker.ErrStreamEnded},
		{"empty event", events{tok(1), {}}, []int32{1}, "", worker.ErrStreamEnded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []int32
			finish, err := worker.Consume(&tc.evs, func(v int32) error { got = append(got, v); return nil })
			if !errors.Is(err, tc.err) || finish != tc.finish {
				t.Fatalf("finish %q err %v; want %q %v", finish, err, tc.finish, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
		})
	}
}

func TestToStatus(t *testing.T) {
	cases := []struct {
		err  error
		code codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{engine.ErrCancelled, codes.Canceled},
		{engine.ErrClosed, codes.Unavailable},
		{engine.ErrTooLarge, codes.InvalidArgument},
		{worker.ErrWrongModel, codes.NotFound},
		{errors.New("other"), codes.Internal},
		{status.Error(codes.Aborted, "x"), codes.Aborted},
	}
	for _, tc := range cases {
		if got := status.Code(worker.ToStatus(tc.err)); got != tc.code {
			t.Errorf("%v: code %v, want %v", tc.err, got, tc.code)
		}
	}
}

func TestEngineConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		adjust func(*worker.EngineConfig)
		ok     bool
	}{
		{"default", func(*worker.EngineConfig) {}, true},
		{"no blocks", func(c *worker.EngineConfig) { c.Blocks = 0 }, false},
		{"no block size", func(c *worker.EngineConfig) { c.BlockSize = 0 }, false},
		{"no chunk", func(c *worker.EngineConfig) { c.ChunkSize = -1 }, false},
		{"no batch tokens", func(c *worker.EngineConfig) { c.MaxTokens = 0 }, false},
		{"no sequences", func(c *worker.EngineConfig) { c.MaxSeqs = 0 }, false},
	}
	for _, tc := range cases {
		c := worker.DefaultEngineConfig()
		tc.adjust(&c)
		err := c.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, worker.ErrInvalidConfig)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
