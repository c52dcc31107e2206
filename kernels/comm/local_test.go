package comm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/ref"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func refRanks(t *testing.T, n int) ([]Communicator, []kernels.Backend) {
	t.Helper()
	bes := make([]kernels.Backend, n)
	for i := range bes {
		bes[i] = ref.New()
	}
	ranks, err := NewGroup(bes)
	if err != nil {
		t.Fatal(err)
	}
	return ranks, bes
}

// runRanks calls f for every rank on its own goroutine and joins them.
func runRanks(ranks []Communicator, f func(r Communicator) error) []error {
	errs := make([]error, len(ranks))
	var wg sync.WaitGroup
	for i, r := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(r)
		}()
	}
	wg.Wait()
	return errs
}

func TestAllReduceSum(t *testing.T) {
	tests := []struct {
		name       string
		ranks      int
		rows, cols int
		rounds     int
	}{
		{"single rank", 1, 2, 3, 3},
		{"two ranks", 2, 4, 5, 20},
		{"three ranks", 3, 1, 7, 20},
		{"four ranks, empty tensor", 4, 0, 8, 2},
		{"four ranks", 4, 3, 64, 50},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ranks, bes := refRanks(t, tc.ranks)
			n := tc.rows * tc.cols
			input := func(rank, round int) []float32 {
				rng := rand.New(rand.NewPCG(uint64(rank), uint64(round)))
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(rng.NormFloat64())
				}
				return v
			}
			results := make([][][]float32, tc.ranks)
			errs := runRanks(ranks, func(r Communicator) error {
				be := bes[r.Rank()]
				x := be.NewTensor(tc.rows, tc.cols)
				for round := 0; round < tc.rounds; round++ {
					// Jitter arrival order: the sum must not depend on it.
					time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
					be.Write(x, input(r.Rank(), round))
					if err := r.AllReduceSum(context.Background(), x); err != nil {
						return err
					}
					out := make([]float32, n)
					be.Read(out, x)
					results[r.Rank()] = append(results[r.Rank()], out)
				}
				return r.Close()
			})
			for i, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", i, err)
				}
			}
			for round := 0; round < tc.rounds; round++ {
				want := make([]float32, n)
				for rank := 0; rank < tc.ranks; rank++ { // rank order
					for i, v := range input(rank, round) {
						want[i] += v
					}
				}
				for rank := 0; rank < tc.ranks; rank++ {
					got := results[rank][round]
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("round %d rank %d element %d: %g, want %g (bit-exact)", round, rank, i, got[i], want[i])
						}
					}
				}
			}
		})
	}
}

func TestAllReduceShapeMismatchBreaksGroup(t *testing.T) {
	ranks, bes := refRanks(t, 3)
	errs := runRanks(ranks, func(r Communicator) error {
		cols := 4
		if r.Rank() == 2 {
			cols = 5
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return r.AllReduceSum(ctx, bes[r.Rank()].NewTensor(1, cols))
	})
	sawShape := false
	for i, err := range errs {
		if err == nil {
			t.Fatalf("rank %d succeeded despite mismatched shapes", i)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("rank %d hung until its deadline: %v", i, err)
		}
		sawShape = sawShape || errors.Is(err, ErrShape)
	}
	if !sawShape {
		t.Fatalf("no rank reported ErrShape: %v", errs)
	}
	if err := ranks[0].AllReduceSum(context.Background(), bes[0].NewTensor(1, 4)); !errors.Is(err, ErrBroken) {
		t.Fatalf("call after a broken collective: %v, want ErrBroken", err)
	}
}

func TestAllReduceCancelledRankBreaksGroup(t *testing.T) {
	ranks, bes := refRanks(t, 3)
	// Rank 2 never joins; ranks 0 and 1 give up after a deadline.
	errs := runRanks(ranks[:2], func(r Communicator) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		return r.AllReduceSum(ctx, bes[r.Rank()].NewTensor(2, 2))
	})
	for i, err := range errs {
		if !errors.Is(err, ErrBroken) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("rank %d: %v, want ErrBroken or deadline", i, err)
		}
	}
	if err := ranks[2].AllReduceSum(context.Background(), bes[2].NewTensor(2, 2)); !errors.Is(err, ErrBroken) {
		t.Fatalf("late rank: %v, want ErrBroken", err)
	}
}

func TestCloseReleasesWaitingRanks(t *testing.T) {
	ranks, bes := refRanks(t, 2)
	done := make(chan error, 1)
	go func() { done <- ranks[0].AllReduceSum(context.Background(), bes[0].NewTensor(1, 1)) }()
	// Wait until rank 0 is inside the collective, then close rank 1.
	for {
		g := ranks[0].(*Local).g
		g.mu.Lock()
		arrived := g.cur.arrived
		g.mu.Unlock()
		if arrived == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := ranks[1].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrBroken) {
			t.Fatalf("waiting rank: %v, want ErrBroken", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting rank not released by Close")
	}
	if err := ranks[1].AllReduceSum(context.Background(), bes[1].NewTensor(1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed rank: %v, want ErrClosed", err)
	}
}

func TestNewGroupRejectsBadRanks(t *testing.T) {
	tests := []struct {
		name string
		bes  []kernels.Backend
	}{
		{"no ranks", nil},
		{"nil backend", []kernels.Backend{ref.New(), nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewGroup(tc.bes); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// BenchmarkAllReduce measures one in-process collective: every rank's
// partial (32 rows of Llama-3-8B's 4096-wide hidden state) copied to the
// host, summed in rank order and written back, on the reference backend.
func BenchmarkAllReduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("ranks%d", n), func(b *testing.B) {
			bes := make([]kernels.Backend, n)
			for i := range bes {
				bes[i] = ref.New()
			}
			ranks, err := NewGroup(bes)
			if err != nil {
				b.Fatal(err)
			}
			ts := make([]kernels.Tensor, n)
			for i := range ts {
				ts[i] = bes[i].NewTensor(32, 4096)
			}
			b.SetBytes(32 * 4096 * 4)
			b.ResetTimer()
			errs := runRanks(ranks, func(r Communicator) error {
				for i := 0; i < b.N; i++ {
					if err := r.AllReduceSum(context.Background(), ts[r.Rank()]); err != nil {
						return err
					}
				}
				return nil
			})
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
