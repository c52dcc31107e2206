package comm

import (
	"github.com/tandemserve/tandem/kernels/cuda"
)

// NCCL ranks are kernels/cuda's NCCLComm: the collective is enqueued on the
// rank's CUDA stream, so AllReduceSum returns before the sum is computed and
// later kernels on that backend see it.
var _ Communicator = (*cuda.NCCLComm)(nil)

// NewNCCL creates an NCCL group over the GPUs of this process, one rank per
// backend (backends[i] is rank i, each on a distinct GPU). It fails with an
// error wrapping cuda.ErrNoNCCL where libnccl.so.2 is missing.
func NewNCCL(backends []*cuda.Backend) ([]Communicator, error) {
	ranks, err := cuda.NewNCCLComms(backends)
	if err != nil {
		return nil, err
	}
	out := make([]Communicator, len(ranks))
	for i, r := range ranks {
		out[i] = r
	}
	return out, nil
}
