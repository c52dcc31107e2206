// Package comm provides the collectives of tensor parallelism.
//
// A model split Megatron-style over N ranks (attention heads and the MLP's
// gate/up columns split across ranks, the attention output and MLP down
// projection split by rows) needs one sum of partial results after attention
// and one after the MLP. Each rank runs on its own Backend, driven by its own
// goroutine, and calls AllReduceSum on its partial tensor; when the call
// returns (or, for NCCL, once the enqueued collective runs) every rank holds
// the full sum.
//
// Two implementations: Group, in process, across goroutines and any
// kernels.Backend (CPU in CI, or several ranks sharing one GPU), reducing on
// the host in rank order so results are bit-reproducible; and NCCL, across the
// GPUs of one process through kernels/cuda.
package comm

import (
	"context"
	"errors"

	"github.com/tandemserve/tandem/kernels"
)

// Communicator is one rank's handle on a collective group.
//
// Contract: every rank calls the same collectives in the same order with
// tensors of equal shape, each from its own goroutine; a rank's calls are not
// concurrent with each other. A failed or cancelled collective leaves the
// group broken: later calls on any rank return an error wrapping ErrBroken.
type Communicator interface {
	// Rank is this rank's index in [0, Size).
	Rank() int
	// Size is the number of ranks.
	Size() int
	// AllReduceSum replaces t by the element-wise sum of t over all ranks.
	// t belongs to this rank's backend.
	AllReduceSum(ctx context.Context, t kernels.Tensor) error
	// Close releases the rank; ranks blocked in a collective with it fail.
	Close() error
}

// Sentinel errors.
var (
	// ErrBroken reports a group that lost a rank mid-collective.
	ErrBroken = errors.New("comm: group broken")
	// ErrShape reports ranks that passed tensors of different shapes.
	ErrShape = errors.New("comm: tensor shapes differ across ranks")
	// ErrClosed reports use of a closed rank.
	ErrClosed = errors.New("comm: closed")
	// ErrInvalid reports a bad group configuration.
	ErrInvalid = errors.New("comm: invalid group")
)
