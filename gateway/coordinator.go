package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	"github.com/tandemserve/tandem/coordinator/token"
	"github.com/tandemserve/tandem/engine/blockhash"
	coordv1 "github.com/tandemserve/tandem/proto/coordinator/v1"
	"github.com/tandemserve/tandem/transport"
)

// CoordinatorPlacer asks the coordinator cluster for placements: which
// prefill and decode workers (or one colocated decode worker) take a job,
// fenced by the placing leader's Raft term. The placement's transfer id,
// token and deadline become the KV transfer's grant unchanged: the
// coordinator signs the transport's grant format, so only a placement can
// authorise a transfer.
type CoordinatorPlacer struct {
	cl    *client.Client
	model string

	// With a model id, placements carry the prompt's block-hash chain so
	// the coordinator can prefer the prefill worker that caches its prefix.
	modelID   string
	blockSize int
}

var _ Placer = (*CoordinatorPlacer)(nil)

// NewCoordinatorPlacer places jobs for model through cl.
func NewCoordinatorPlacer(cl *client.Client, model string) (*CoordinatorPlacer, error) {
	if cl == nil || model == "" {
		return nil, fmt.Errorf("%w: coordinator placer needs a client and a model", ErrInvalidConfig)
	}
	return &CoordinatorPlacer{cl: cl, model: model}, nil
}

// HashPrefixes makes every placement request carry the prompt's full-block
// hash chain (engine/blockhash) for modelID, the id the workers' engines use,
// and blockSize, their KV block size, so prefix-cache-aware policies see
// which worker already holds the prompt's prefix. Call before first use.
func (p *CoordinatorPlacer) HashPrefixes(modelID string, blockSize int) {
	p.modelID, p.blockSize = modelID, blockSize
}

// Place asks the leader for workers, excluding failed nodes.
func (p *CoordinatorPlacer) Place(ctx context.Context, job *Job, exclude []string) (Placement, error) {
	// The request id is the coordinator's idempotency key: a retry after a
	// failure (with more exclusions) must not get the cached placement.
	req := &coordv1.PlaceRequest{
		RequestId: fmt.Sprintf("%s/%d", job.ID, len(exclude)), Model: p.model,
		PromptTokens: int32(len(job.Tokens)), MaxTokens: int32(job.Params.MaxTokens),
		Priority: int32(job.Priority), Exclude: exclude,
	}
	if p.modelID != "" && p.blockSize > 0 {
		req.BlockHashes = blockhash.Chain(p.modelID, job.Tokens, p.blockSize)
		req.BlockTokens = int32(p.blockSize)
	}
	pl, err := p.cl.Place(ctx, req)
	if errors.Is(err, client.ErrNoCapacity) {
		return Placement{}, fmt.Errorf("%w: %w", ErrOverloaded, err)
	}
	if err != nil {
		return Placement{}, fmt.Errorf("%w: placement: %w", ErrNoWorkers, err)
	}
	out := Placement{
		Prefill: pl.GetPrefill().GetGrpcAddr(), Decode: pl.GetDecode().GetGrpcAddr(),
		Colocated: pl.GetColocated() || pl.GetPrefill() == nil, Epoch: pl.GetTerm(),
	}
	if !out.Colocated {
		mac, err := token.MAC(pl.GetTransferToken())
		if err != nil {
			return Placement{}, fmt.Errorf("%w: placement token: %w", ErrNoWorkers, err)
		}
		out.Grant = &transport.Grant{
			TransferID: pl.GetTransferId(), Epoch: pl.GetTerm(),
			Expiry: time.Unix(0, pl.GetDeadlineUnixNano()), Token: mac,
		}
	}
	return out, nil
}

// Ready succeeds when a coordinator answers with a leader.
func (p *CoordinatorPlacer) Ready(ctx context.Context) error {
	st, err := p.cl.Status(ctx)
	if err != nil {
		return fmt.Errorf("%w: coordinator: %w", ErrNoWorkers, err)
	}
	if st.GetLeaderId() == "" {
		return fmt.Errorf("%w: coordinator has no leader", ErrNoWorkers)
	}
	return nil
}
