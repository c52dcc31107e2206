package comm

import (
	"context"
	"fmt"
	"sync"

	"github.com/tandemserve/tandem/kernels"
)

// Group is an in-process collective group: ranks are goroutines, each with
// its own kernels.Backend. A collective copies every rank's tensor to the
// host, the last rank to arrive adds them up in rank order (0, 1, ..., N-1,
// so the result is identical on every rank and across runs), and each rank
// writes the sum back to its tensor.
type Group struct {
	size int
	mu   sync.Mutex
	cur  *round // collective being assembled
	err  error  // set when the group breaks; sticky
}

// round is one collective. done is closed when sum (or err) is final; after
// that the round is read-only.
type round struct {
	bufs       [][]float32
	arrived    int
	rows, cols int
	sum        []float32
	err        error
	done       chan struct{}
}

func (g *Group) newRound() *round {
	return &round{bufs: make([][]float32, g.size), done: make(chan struct{})}
}

// NewGroup makes an in-process group with one rank per backend;
// backends[i] is rank i. Several ranks may share a backend's device but not
// the Backend value itself, since a Backend is used by one goroutine at a time.
func NewGroup(backends []kernels.Backend) ([]Communicator, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("%w: no ranks", ErrInvalid)
	}
	// Sharing one Backend value between ranks cannot be detected in
	// general (stateless backends such as ref are zero-size values that may
	// share an address), so it is a documented contract only.
	for i, b := range backends {
		if b == nil {
			return nil, fmt.Errorf("%w: rank %d has no backend", ErrInvalid, i)
		}
	}
	g := &Group{size: len(backends)}
	g.cur = g.newRound()
	ranks := make([]Communicator, len(backends))
	for i, b := range backends {
		ranks[i] = &Local{g: g, rank: i, be: b}
	}
	return ranks, nil
}

// Local is one rank of a Group.
type Local struct {
	g      *Group
	rank   int
	be     kernels.Backend
	buf    []float32 // host staging, reused across collectives
	closed bool
}

var _ Communicator = (*Local)(nil)

// Rank implements Communicator.
func (l *Local) Rank() int { return l.rank }

// Size implements Communicator.
func (l *Local) Size() int { return l.g.size }

// AllReduceSum implements Communicator. It blocks until every rank has
// joined, or ctx ends (which breaks the group).
func (l *Local) AllReduceSum(ctx context.Context, t kernels.Tensor) error {
	if l.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rows, cols := t.Rows(), t.Cols()
	n := rows * cols
	if cap(l.buf) < n {
		l.buf = make([]float32, n)
	}
	l.buf = l.buf[:n]
	l.be.Read(l.buf, t)

	rd, err := l.g.join(l.rank, l.buf, rows, cols)
	if err != nil {
		return err
	}
	select {
	case <-rd.done:
	case <-ctx.Done():
		l.g.breakGroup(rd, fmt.Errorf("%w: rank %d: %w", ErrBroken, l.rank, ctx.Err()))
		<-rd.done
	}
	if rd.err != nil {
		return rd.err
	}
	l.be.Write(t, rd.sum)
	return nil
}

// join adds rank's contribution to the current round; the last arrival
// reduces and starts the next round.
func (g *Group) join(rank int, buf []float32, rows, cols int) (*round, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	rd := g.cur
	if rd.arrived == 0 {
		rd.rows, rd.cols = rows, cols
	} else if rd.rows != rows || rd.cols != cols {
		err := fmt.Errorf("%w: rank %d has %dx%d, others %dx%d", ErrShape, rank, rows, cols, rd.rows, rd.cols)
		g.breakLocked(rd, fmt.Errorf("%w: %w", ErrBroken, err))
		return nil, err
	}
	rd.bufs[rank] = buf
	rd.arrived++
	if rd.arrived == g.size {
		sum := make([]float32, len(buf))
		for _, b := range rd.bufs {
			for i, v := range b {
				sum[i] += v
			}
		}
		rd.sum = sum
		close(rd.done)
		g.cur = g.newRound()
	}
	return rd, nil
}

// breakGroup fails rd and every later call, unless rd already completed.
func (g *Group) breakGroup(rd *round, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.breakLocked(rd, err)
}

func (g *Group) breakLocked(rd *round, err error) {
	select {
	case <-rd.done:
		// Completed before the break (the cancelling rank lost the race):
		// its result stands and the group stays whole.
		return
	default:
	}
	if g.err == nil {
		g.err = err
	}
	rd.err = err
	close(rd.done)
}

// Close implements Communicator. A rank that closes while others wait in a
// collective breaks the group, so they return instead of hanging.
func (l *Local) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	if l.g.cur.arrived > 0 {
		l.g.breakLocked(l.g.cur, fmt.Errorf("%w: rank %d closed", ErrBroken, l.rank))
	} else if l.g.err == nil {
		l.g.err = fmt.Errorf("%w: rank %d closed", ErrBroken, l.rank)
	}
	return nil
}
