package gateway_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/gateway"
	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// scriptWorker continues a fixed sequence: it emits script[generated:],
// and dies (Unavailable) after dieAfter tokens when dieAfter > 0.
type scriptWorker struct {
	addr     string
	script   []int32
	dieAfter int

	mu   sync.Mutex
	reqs []*tandemv1.RunRequest
}

var _ gateway.WorkerConn = (*scriptWorker)(nil)

func (w *scriptWorker) Addr() string { return w.addr }

func (w *scriptWorker) Load(context.Context) (*tandemv1.LoadResponse, error) {
	return &tandemv1.LoadResponse{}, nil
}

func (w *scriptWorker) Run(ctx context.Context, req *tandemv1.RunRequest, emit func(int32) error) (string, error) {
	w.mu.Lock()
	w.reqs = append(w.reqs, req)
	w.mu.Unlock()
	sent := 0
	for i := int(req.GetGenerated()); i < len(w.script) && i < int(req.GetSampling().GetMaxTokens()); i++ {
		if w.dieAfter > 0 && sent == w.dieAfter {
			return "", status.Error(codes.Unavailable, "worker died")
		}
		if err := emit(w.script[i]); err != nil {
			return "", err
		}
		sent++
	}
	return "length", nil
}

func TestColocatedResumesOnWorkerDeath(t *testing.T) {
	script := []int32{10, 11, 12, 13, 14, 15, 16, 17}
	prompt := []int32{1, 2, 3}
	cases := []struct {
		name     string
		workers  []*scriptWorker
		wantErr  error
		wantRuns []int // runs per worker
	}{
		{name: "healthy", workers: []*scriptWorker{{addr: "a", script: script}, {addr: "b", script: script}}, wantRuns: []int{1, 0}},
		{name: "first dies", workers: []*scriptWorker{{addr: "a", script: script, dieAfter: 3}, {addr: "b", script: script}}, wantRuns: []int{1, 1}},
		{name: "two die", workers: []*scriptWorker{{addr: "a", script: script, dieAfter: 2}, {addr: "b", script: script, dieAfter: 2}, {addr: "c", script: script}}, wantRuns: []int{1, 1, 1}},
		{name: "all die", workers: []*scriptWorker{{addr: "a", script: script, dieAfter: 1}, {addr: "b", script: script, dieAfter: 1}}, wantErr: gateway.ErrNoWorkers, wantRuns: []int{1, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conns := make([]gateway.WorkerConn, len(tc.workers))
			for i, w := range tc.workers {
				conns[i] = w
			}
			r, err := gateway.NewColocated(conns)
			if err != nil {
				t.Fatal(err)
			}
			p := sample.DefaultParams()
			p.MaxTokens = len(script)
			var got []int32
			_, err = r.Generate(context.Background(), &gateway.Job{ID: "j", Tokens: prompt, Params: p}, func(t int32) error {
				got = append(got, t)
				return nil
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil {
				if diff := cmp.Diff(script, got); diff != "" {
					t.Errorf("stream (-want +got):\n%s", diff)
				}
			}
			for i, w := range tc.workers {
				if len(w.reqs) != tc.wantRuns[i] {
					t.Errorf("worker %s ran %d times, want %d", w.addr, len(w.reqs), tc.wantRuns[i])
				}
				// A resumed run carries the prompt plus every token so far.
				for _, req := range w.reqs {
					g := int(req.GetGenerated())
					want := append(slices.Clone(prompt), script[:g]...)
					if diff := cmp.Diff(want, req.GetTokens()); diff != "" {
						t.Errorf("worker %s resume tokens (-want +got):\n%s", w.addr, diff)
					}
				}
			}
		})
	}
}
