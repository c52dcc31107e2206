package client

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Status asks one coordinator for its view of the Raft group.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.StatusResponse, error) {
		return pb.NewAdminClient(cc).Status(ctx, &pb.StatusRequest{})
	})
}

// Nodes lists registered nodes, optionally of one role.
func (c *Client) Nodes(ctx context.Context, role string) (*pb.NodesResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.NodesResponse, error) {
		return pb.NewAdminClient(cc).Nodes(ctx, &pb.NodesRequest{Role: role})
	})
}

// Drain stops new placements on node.
func (c *Client) Drain(ctx context.Context, node string) (*pb.NodeStatus, error) {
	r, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.DrainResponse, error) {
		return pb.NewAdminClient(cc).Drain(ctx, &pb.DrainRequest{NodeId: node})
	})
	return r.GetNode(), err
}

// Undrain returns node to service.
func (c *Client) Undrain(ctx context.Context, node string) (*pb.NodeStatus, error) {
	r, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.DrainResponse, error) {
		return pb.NewAdminClient(cc).Undrain(ctx, &pb.DrainRequest{NodeId: node})
	})
	return r.GetNode(), err
}

// AddPeer adds a coordinator to the Raft group and returns gossip seeds for it.
func (c *Client) AddPeer(ctx context.Context, r *pb.AddPeerRequest) (*pb.AddPeerResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.AddPeerResponse, error) {
		return pb.NewAdminClient(cc).AddPeer(ctx, r)
	})
}

// RemovePeer removes a coordinator from the Raft group.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	_, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.RemovePeerResponse, error) {
		return pb.NewAdminClient(cc).RemovePeer(ctx, &pb.RemovePeerRequest{Id: id})
	})
	return err
}

// Models lists models and the nodes serving them.
func (c *Client) Models(ctx context.Context) (*pb.ModelsResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.ModelsResponse, error) {
		return pb.NewAdminClient(cc).Models(ctx, &pb.ModelsRequest{})
	})
}

// SetModel adds or replaces a model.
func (c *Client) SetModel(ctx context.Context, m *pb.Model) error {
	_, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.SetModelResponse, error) {
		return pb.NewAdminClient(cc).SetModel(ctx, &pb.SetModelRequest{Model: m})
	})
	return err
}

// RemoveModel forgets a model.
func (c *Client) RemoveModel(ctx context.Context, id string) error {
	_, err := call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.RemoveModelResponse, error) {
		return pb.NewAdminClient(cc).RemoveModel(ctx, &pb.RemoveModelRequest{Id: id})
	})
	return err
}

// Policy returns the placement policy JSON and the log index that set it.
func (c *Client) Policy(ctx context.Context) (*pb.PolicyResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.PolicyResponse, error) {
		return pb.NewAdminClient(cc).GetPolicy(ctx, &pb.GetPolicyRequest{})
	})
}

// SetPolicy replaces the placement policy.
func (c *Client) SetPolicy(ctx context.Context, specJSON string) (*pb.PolicyResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.PolicyResponse, error) {
		return pb.NewAdminClient(cc).SetPolicy(ctx, &pb.SetPolicyRequest{SpecJson: specJSON})
	})
}

// SnapshotSave makes the answering coordinator take a Raft snapshot.
func (c *Client) SnapshotSave(ctx context.Context) (*pb.SnapshotSaveResponse, error) {
	return call(ctx, c, func(ctx context.Context, cc *grpc.ClientConn) (*pb.SnapshotSaveResponse, error) {
		return pb.NewAdminClient(cc).SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
	})
}
