package client

import (
	"context"
	"time"

	"google.golang.org/grpc"

	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Register records this node with the cluster; the response names gossip seeds to join and the
// load-report interval.
func (c *Client) Register(ctx context.Context, n *pb.NodeInfo) (*pb.RegisterResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.RegisterResponse, error) {
		return pb.NewCoordinatorClient(cc).Register(ctx, &pb.RegisterRequest{Node: n})
	})
}

// ReportLoad sends one load report and returns the node's replicated state (a worker that reads
// "draining" finishes its work and stops taking new requests).
func (c *Client) ReportLoad(ctx context.Context, l *pb.Load) (string, error) {
	r, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.ReportLoadResponse, error) {
		return pb.NewCoordinatorClient(cc).ReportLoad(ctx, &pb.ReportLoadRequest{Load: l})
	})
	return r.GetState(), err
}

// Place asks the leader for workers. A retry with the same RequestId returns the same placement
// while the same leader serves it.
func (c *Client) Place(ctx context.Context, r *pb.PlaceRequest) (*pb.Placement, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.Placement, error) {
		return pb.NewCoordinatorClient(cc).Place(ctx, r)
	})
}

// ReportFailure tells the leader that node failed its part of p and returns a new placement that
// avoids it.
func (c *Client) ReportFailure(ctx context.Context, p *pb.Placement, node, reason string) (*pb.Placement, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.Placement, error) {
		return pb.NewCoordinatorClient(cc).ReportFailure(ctx, &pb.ReportFailureRequest{Placement: p, FailedNode: node, Reason: reason})
	})
}

// Resume places the rest of a request whose decode worker died after generating generated tokens:
// the new decode worker gets prompt plus those tokens (hashes: their full-block hash chain).
func (c *Client) Resume(ctx context.Context, p *pb.Placement, deadNode string, generated int, hashes []uint64) (*pb.Placement, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.Placement, error) {
		return pb.NewCoordinatorClient(cc).Resume(ctx, &pb.ResumeRequest{
			Placement: p, FailedNode: deadNode, GeneratedTokens: int32(generated), BlockHashes: hashes,
		})
	})
}

// RunLoadReporter calls ReportLoad with sample() every interval until ctx ends; onState (may be
// nil) receives the node's state after each successful report. It returns ctx's error. Failed
// reports are logged and retried at the next tick.
func (c *Client) RunLoadReporter(ctx context.Context, interval time.Duration, sample func() *pb.Load, onState func(string)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, interval)
		st, err := c.ReportLoad(rctx, sample())
		cancel()
		if err != nil {
			c.log.Debug("load report failed", "err", err)
		} else if onState != nil {
			onState(st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
