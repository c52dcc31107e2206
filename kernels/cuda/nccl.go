package cuda

import (
	"context"
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// NCCLComm is one rank of an NCCL communicator: a group of GPUs driven by
// this process, one Backend per GPU (tensor parallelism inside a worker).
// kernels/comm wraps it as a comm.Communicator.
//
// AllReduceSum enqueues the collective on the rank's stream and returns: it
// is ordered after the kernels already launched on that backend and before
// the ones launched next, so the caller does not wait for it. Each rank must
// be driven by its own goroutine (NCCL's one-thread-per-GPU model), and all
// ranks must issue the same collectives in the same order.
type NCCLComm struct {
	b          *Backend
	comm       uintptr
	rank, size int
}

// NCCLAvailable reports whether libnccl.so.2 loads next to b's library.
func (b *Backend) NCCLAvailable() bool { return b.lib != nil && b.lib.ncclAvailable() }

// NewNCCLComms creates one communicator rank per backend; backends[i]
// becomes rank i. The backends must be on distinct GPUs (NCCL refuses two
// ranks on one device; use kernels/comm's in-process group for that).
func NewNCCLComms(backends []*Backend) ([]*NCCLComm, error) {
	if len(backends) == 0 {
		return nil, fmt.Errorf("%w: no backends for NCCL", ErrInvalidArgument)
	}
	seen := map[int]bool{}
	ctxs := make([]uintptr, len(backends))
	for i, b := range backends {
		if b == nil || b.lib == nil {
			return nil, fmt.Errorf("%w: backend %d is closed", ErrClosed, i)
		}
		if seen[b.info.Index] {
			return nil, fmt.Errorf("%w: two NCCL ranks on GPU %d", ErrInvalidArgument, b.info.Index)
		}
		seen[b.info.Index] = true
		ctxs[i] = b.ctx
	}
	lib := backends[0].lib
	if !lib.ncclAvailable() {
		return nil, fmt.Errorf("%w: libnccl.so.2 not found", ErrNoNCCL)
	}
	handles, err := lib.ncclInitAll(ctxs)
	if err != nil {
		return nil, err
	}
	out := make([]*NCCLComm, len(backends))
	for i, b := range backends {
		out[i] = &NCCLComm{b: b, comm: handles[i], rank: i, size: len(backends)}
	}
	return out, nil
}

// Rank is this rank's index.
func (c *NCCLComm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *NCCLComm) Size() int { return c.size }

// AllReduceSum replaces t on every rank by the element-wise sum over ranks.
// t must be a tensor of this rank's backend with the same shape on every
// rank.
func (c *NCCLComm) AllReduceSum(ctx context.Context, t kernels.Tensor) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.comm == 0 {
		return ErrClosed
	}
	ct := c.b.tensor(t, "AllReduceSum")
	n := ct.rows * ct.cols
	if n == 0 {
		return nil
	}
	if !c.b.live(ct) {
		return c.b.err
	}
	return c.b.lib.ncclAllReduceSum(c.b.ctx, c.comm, ct.ptr, n)
}

// Close destroys the rank's communicator after its stream drains.
func (c *NCCLComm) Close() error {
	if c.comm == 0 || c.b.lib == nil {
		return nil
	}
	err := c.b.lib.sync(c.b.ctx)
	if e := c.b.lib.ncclDestroy(c.comm); err == nil {
		err = e
	}
	c.comm = 0
	return err
}
