package decode_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/decode"
	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/gateway"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
	"github.com/tandemserve/tandem/metrics"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/llama/llamatest"
	"github.com/tandemserve/tandem/prefill"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
	"github.com/tandemserve/tandem/transport"
	kvdialer "github.com/tandemserve/tandem/transport/dialer"
	"github.com/tandemserve/tandem/transport/inproc"
	"github.com/tandemserve/tandem/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	modelID = "tiny@test"
	secret  = "0123456789abcdef0123456789abcdef-test"
)

// tinyModel is the 2-layer random-weight model on the reference backend.
func tinyModel(t testing.TB) *llama.Model {
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
	return m
}

// startEngine builds an engine with small blocks so prompts span several,
// on its own instance of the tiny model (a model's forward pass is driven by
// one engine at a time; every instance has the same weights).
func startEngine(t testing.TB) *engine.Engine {
	t.Helper()
	m := tinyModel(t)
	mc := m.Config()
	cache, err := m.Backend().NewKVCache(mc.KVSpec(64, 4, kernels.KVF16))
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Scheduler.MaxSeqs, cfg.Scheduler.MaxTokens, cfg.Scheduler.ChunkSize = 8, 64, 16
	cfg.Scheduler.MaxSeqLen = mc.ContextLength
	cfg.Vocab, cfg.ModelID = mc.Vocab, modelID
	e, err := engine.New(cfg, m, cache)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
		cache.Close()
	})
	return e
}

// serve runs svc on a loopback listener and returns a client for it.
func serve(t testing.TB, svc tandemv1.WorkerServer) (*worker.Client, *grpc.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	tandemv1.RegisterWorkerServer(srv, svc)
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
	})
	return c, srv
}

type decodeNode struct {
	eng    *engine.Engine
	recv   *transport.Receiver
	client *worker.Client
	srv    *grpc.Server
}

// dialer reaches decode receivers in this process.
type dialer struct {
	local transport.Descriptor
	mu    sync.Mutex
	recvs map[string]*transport.Receiver
	conns []*inproc.Conn
}

func (d *dialer) Dial(_ context.Context, peer kvdialer.Peer) (transport.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.recvs[peer.NodeID]
	if !ok {
		return nil, fmt.Errorf("no receiver at %s", peer.NodeID)
	}
	c, err := inproc.Dial(d.local, r, nil)
	if err != nil {
		return nil, err
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *dialer) Drop(string) {}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
}

type cluster struct {
	prefillEng *engine.Engine
	prefill    *worker.Client
	decodes    []*decodeNode
}

// startCluster starts one prefill and n decode workers sharing m.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	desc := func(node string, e *engine.Engine) transport.Descriptor {
		return transport.Descriptor{NodeID: node, ModelID: modelID, Spec: e.Cache().Spec(), Layout: transport.LayoutKThenV, HostID: "test"}
	}
	c := &cluster{prefillEng: startEngine(t)}
	d := &dialer{recvs: map[string]*transport.Receiver{}}
	for range n {
		e := startEngine(t)
		// The receiver's node id must be the address grants name, known
		// only once the server listens: register through a forwarding
		// server whose decode service is set after.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		rc := transport.DefaultReceiverConfig(desc(addr, e))
		rc.Secret, rc.Logger = []byte(secret), slog.New(slog.DiscardHandler)
		recv, err := transport.NewReceiver(rc, e.Cache(), e)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { recv.Close() })
		svc, err := decode.NewServer(decode.DefaultConfig(), e, recv, modelID)
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		tandemv1.RegisterWorkerServer(srv, svc)
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(lis) }()
		cl, err := worker.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cl.Close()
			srv.Stop()
			<-done
		})
		d.recvs[addr] = recv
		c.decodes = append(c.decodes, &decodeNode{eng: e, recv: recv, client: cl, srv: srv})
	}
	d.local = desc("prefill", c.prefillEng)
	t.Cleanup(d.close)
	ps, err := prefill.NewServer(c.prefillEng, d, modelID, metrics.NewTransfer(metrics.NewRegistry()), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.prefill, _ = serve(t, ps)
	return c
}

func greedy(n int) sample.Params {
	p := sample.DefaultParams()
	p.MaxTokens = n
	return p
}

func prompt(n, seed int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(3 + (i*7+seed*13)%90)
	}
	return out
}

// reference runs the prompt on a fresh engine alone.
func reference(t *testing.T, tokens []int32, n int) []int32 {
	t.Helper()
	e := startEngine(t)
	h, err := e.Add(context.Background(), engine.Request{Tokens: tokens, Params: greedy(n)})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := h.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func collect(t *testing.T, r gateway.Router, tokens []int32, n int) ([]int32, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []int32
	_, err := r.Generate(ctx, &gateway.Job{ID: fmt.Sprintf("t%d-%d", len(tokens), n), Tokens: tokens, Params: greedy(n)}, func(t int32) error {
		out = append(out, t)
		return nil
	})
	return out, err
}

// waitIdle waits until no sequence or transfer holds decode blocks.
func waitIdle(t *testing.T, c *cluster) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := ""
		for i, d := range c.decodes {
			if st := d.eng.BlockManager().Stats(); st.Held != 0 || d.recv.Active() != 0 {
				busy = fmt.Sprintf("decode %d holds %d blocks, %d transfers", i, st.Held, d.recv.Active())
			}
		}
		if st := c.prefillEng.BlockManager().Stats(); st.Held != 0 {
			busy = fmt.Sprintf("prefill holds %d blocks", st.Held)
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(busy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDisaggregatedMatchesEngine(t *testing.T) {
	c := startCluster(t, 1)
	r, err := gateway.NewDisaggregated(gateway.DefaultDisaggConfig(), []*worker.Client{c.prefill}, []*worker.Client{c.decodes[0].client}, []byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	col, err := gateway.NewColocated([]gateway.WorkerConn{c.decodes[0].client})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ promptLen, maxTokens int }{{1, 5}, {5, 8}, {16, 12}, {37, 20}, {9, 1}}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("prompt%d_out%d", tc.promptLen, tc.maxTokens), func(t *testing.T) {
			p := prompt(tc.promptLen, tc.maxTokens)
			want := reference(t, p, tc.maxTokens)
			for name, router := range map[string]gateway.Router{"disaggregated": r, "colocated": col} {
				got, err := collect(t, router, p, tc.maxTokens)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s stream (-engine +cluster):\n%s", name, diff)
				}
			}
			waitIdle(t, c)
		})
	}
	// Concurrent requests share the decode batch.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Go(func() {
			p := prompt(10+i*5, i)
			want := reference(t, p, 10)
			got, err := collect(t, r, p, 10)
			if err == nil && !cmp.Equal(want, got) {
				err = fmt.Errorf("request %d: got %v, want %v", i, got, want)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	waitIdle(t, c)
}

// dyingClient wraps a decode worker whose Attach stream breaks after a
// number of tokens, as when the worker process dies.
type dyingClient struct {
	*worker.Client
	after int
}

func (d *dyingClient) RPC() tandemv1.WorkerClient { return dyingRPC{d.Client.RPC(), d.after} }

type dyingRPC struct {
	tandemv1.WorkerClient
	after int
}

func (d dyingRPC) Attach(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[tandemv1.AttachRequest, tandemv1.TokenEvent], error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := d.WorkerClient.Attach(ctx, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &dyingStream{BidiStreamingClient: s, left: d.after, cancel: cancel}, nil
}

type dyingStream struct {
	grpc.BidiStreamingClient[tandemv1.AttachRequest, tandemv1.TokenEvent]
	left   int
	cancel context.CancelFunc
}

func (s *dyingStream) Recv() (*tandemv1.TokenEvent, error) {
	if s.left == 0 {
		s.cancel() // the worker's side of the stream ends too
		return nil, status.Error(codes.Unavailable, "connection reset")
	}
	s.left--
	return s.BidiStreamingClient.Recv()
}

func TestDisaggregatedResumesAfterDecodeDeath(t *testing.T) {
	c := startCluster(t, 2)
	p := prompt(21, 3)
	want := reference(t, p, 16)
	dying := &dyingClient{Client: c.decodes[0].client, after: 4}
	r, err := gateway.NewDisaggregated(gateway.DefaultDisaggConfig(), []*worker.Client{c.prefill}, []gateway.RemoteWorker{dying, c.decodes[1].client}, []byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(t, r, p, 16)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resumed stream (-engine +cluster):\n%s", diff)
	}
	if l := c.decodes[1].eng.Load(); l.PromptTokens == 0 {
		t.Error("second decode worker never ran the resumed request")
	}
	waitIdle(t, c)
}

func TestClientCancelFreesDecode(t *testing.T) {
	c := startCluster(t, 1)
	r, err := gateway.NewDisaggregated(gateway.DefaultDisaggConfig(), []*worker.Client{c.prefill}, []*worker.Client{c.decodes[0].client}, []byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = r.Generate(ctx, &gateway.Job{ID: "cancel", Tokens: prompt(12, 1), Params: greedy(200)}, func(int32) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if err == nil {
		t.Fatal("cancelled request finished")
	}
	waitIdle(t, c)
}

func TestAttachRejectsBadRequests(t *testing.T) {
	c := startCluster(t, 1)
	cases := []struct {
		name string
		req  *tandemv1.AttachRequest
		code codes.Code
	}{
		{name: "no run", req: &tandemv1.AttachRequest{TransferId: "x"}, code: codes.InvalidArgument},
		{name: "no transfer", req: &tandemv1.AttachRequest{Run: &tandemv1.RunRequest{Tokens: []int32{5}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4}}}, code: codes.InvalidArgument},
		{name: "wrong model", req: &tandemv1.AttachRequest{TransferId: "x", Run: &tandemv1.RunRequest{Model: "other", Tokens: []int32{5}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4}}}, code: codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.decodes[0].client.RPC().Attach(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			_, err = s.Recv()
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
		})
	}
	// A first token for a transfer that never happened fails cleanly.
	s, err := c.decodes[0].client.RPC().Attach(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first := int32(7)
	s.Send(&tandemv1.AttachRequest{TransferId: "ghost", Run: &tandemv1.RunRequest{Tokens: []int32{5, 6}, Sampling: &tandemv1.SamplingParams{MaxTokens: 4}}})
	s.Send(&tandemv1.AttachRequest{FirstToken: &first})
	if _, err := s.Recv(); status.Code(err) == codes.OK {
		t.Fatal("attach to an unknown transfer succeeded")
	}
	waitIdle(t, c)
}

// deadPrefill is a prefill worker whose process is gone.
type deadPrefill struct {
	*worker.Client
	calls *atomic.Int32
}

func (d deadPrefill) Addr() string               { return "dead-prefill:1" }
func (d deadPrefill) RPC() tandemv1.WorkerClient { return deadRPC{d.Client.RPC(), d.calls} }

type deadRPC struct {
	tandemv1.WorkerClient
	calls *atomic.Int32
}

func (d deadRPC) Prefill(context.Context, *tandemv1.PrefillRequest, ...grpc.CallOption) (*tandemv1.PrefillResponse, error) {
	d.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "connection refused")
}

func TestDisaggregatedSkipsDeadPrefill(t *testing.T) {
	c := startCluster(t, 1)
	p := prompt(14, 2)
	want := reference(t, p, 9)
	dead := deadPrefill{c.prefill, new(atomic.Int32)}
	r, err := gateway.NewDisaggregated(gateway.DefaultDisaggConfig(), []gateway.RemoteWorker{dead, c.prefill},
		[]*worker.Client{c.decodes[0].client}, []byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first request meets the dead prefill worker first (both idle, it
	// is listed first) and must still succeed through the live one.
	got, err := collect(t, r, p, 9)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stream (-engine +cluster):\n%s", diff)
	}
	if n := dead.calls.Load(); n != 1 {
		t.Errorf("dead prefill worker called %d times, want 1 (then excluded)", n)
	}
	waitIdle(t, c)
}

// listPlacer places every job on fixed workers by address, with an epoch.
type listPlacer struct {
	prefill, decode string
	colocated       bool
	calls           atomic.Int32
}

func (p *listPlacer) Place(_ context.Context, _ *gateway.Job, exclude []string) (gateway.Placement, error) {
	p.calls.Add(1)
	if len(exclude) > 0 {
		return gateway.Placement{}, gateway.ErrNoWorkers
	}
	return gateway.Placement{Prefill: p.prefill, Decode: p.decode, Colocated: p.colocated, Epoch: 7}, nil
}

func (p *listPlacer) Ready(context.Context) error { return nil }

func TestDisaggregatedWithPlacer(t *testing.T) {
	c := startCluster(t, 1)
	p := prompt(19, 4)
	want := reference(t, p, 11)
	for _, colocated := range []bool{false, true} {
		t.Run(fmt.Sprintf("colocated=%v", colocated), func(t *testing.T) {
			pl := &listPlacer{prefill: c.prefill.Addr(), decode: c.decodes[0].client.Addr(), colocated: colocated}
			cfg := gateway.DefaultDisaggConfig()
			cfg.Placer = pl
			cfg.Dial = func(addr string) (gateway.RemoteWorker, error) { return worker.Dial(addr) }
			r, err := gateway.NewDisaggregated[gateway.RemoteWorker, gateway.RemoteWorker](cfg, nil, nil, []byte(secret), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := collect(t, r, p, 11)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("stream (-engine +cluster):\n%s", diff)
			}
			if pl.calls.Load() != 1 {
				t.Errorf("placer called %d times", pl.calls.Load())
			}
			if err := r.Ready(context.Background()); err != nil {
				t.Error(err)
			}
			waitIdle(t, c)
		})
	}
	if _, err := gateway.NewDisaggregated[gateway.RemoteWorker, gateway.RemoteWorker](gateway.DisaggConfig{GrantTTL: time.Second, Attempts: 1, Placer: &listPlacer{}}, nil, nil, []byte(secret), nil); err == nil {
		t.Error("a placer without a dial function was accepted")
	}
}
