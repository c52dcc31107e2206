package api

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Register implements pb.CoordinatorServer.
func (s *Service) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	return onLeader(ctx, s, func() (*pb.RegisterResponse, error) { return s.b.Register(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.RegisterResponse, error) {
			return pb.NewCoordinatorClient(c).Register(fctx, req)
		})
}

// ReportLoad implements pb.CoordinatorServer.
func (s *Service) ReportLoad(ctx context.Context, req *pb.ReportLoadRequest) (*pb.ReportLoadResponse, error) {
	return onLeader(ctx, s, func() (*pb.ReportLoadResponse, error) { return s.b.ReportLoad(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.ReportLoadResponse, error) {
			return pb.NewCoordinatorClient(c).ReportLoad(fctx, req)
		})
}

// Place implements pb.CoordinatorServer.
func (s *Service) Place(ctx context.Context, req *pb.PlaceRequest) (*pb.Placement, error) {
	return onLeader(ctx, s, func() (*pb.Placement, error) { return s.b.Place(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.Placement, error) {
			return pb.NewCoordinatorClient(c).Place(fctx, req)
		})
}

// ReportFailure implements pb.CoordinatorServer.
func (s *Service) ReportFailure(ctx context.Context, req *pb.ReportFailureRequest) (*pb.Placement, error) {
	return onLeader(ctx, s, func() (*pb.Placement, error) { return s.b.ReportFailure(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.Placement, error) {
			return pb.NewCoordinatorClient(c).ReportFailure(fctx, req)
		})
}

// Resume implements pb.CoordinatorServer.
func (s *Service) Resume(ctx context.Context, req *pb.ResumeRequest) (*pb.Placement, error) {
	return onLeader(ctx, s, func() (*pb.Placement, error) { return s.b.Resume(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.Placement, error) {
			return pb.NewCoordinatorClient(c).Resume(fctx, req)
		})
}

// Status implements pb.AdminServer. Any node answers from its own view, so status works even
// without a leader.
func (s *Service) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	return s.b.Status(ctx)
}

// Nodes implements pb.AdminServer. Load lives on the leader, so the call is forwarded when a
// leader exists and answered locally (without load) when none does.
func (s *Service) Nodes(ctx context.Context, req *pb.NodesRequest) (*pb.NodesResponse, error) {
	return leaderOrLocal(ctx, s, func() *pb.NodesResponse { return s.b.Nodes(ctx, req.GetRole()) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.NodesResponse, error) {
			return pb.NewAdminClient(c).Nodes(fctx, req)
		})
}

// leaderOrLocal answers a read on the leader, falling back to local state when no leader can
// be reached (an operator debugging a broken cluster still sees something).
func leaderOrLocal[T any](ctx context.Context, s *Service, local func() T, remote func(*grpc.ClientConn, context.Context) (T, error)) (T, error) {
	resp, err := onLeader(ctx, s, func() (T, error) { return local(), nil }, remote)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("answering read locally", "err", err)
		return local(), nil
	}
	return resp, err
}

// Drain implements pb.AdminServer.
func (s *Service) Drain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	return onLeader(ctx, s, func() (*pb.DrainResponse, error) {
		n, err := s.b.Drain(ctx, req.GetNodeId())
		return &pb.DrainResponse{Node: n}, err
	}, func(c *grpc.ClientConn, fctx context.Context) (*pb.DrainResponse, error) {
		return pb.NewAdminClient(c).Drain(fctx, req)
	})
}

// Undrain implements pb.AdminServer.
func (s *Service) Undrain(ctx context.Context, req *pb.DrainRequest) (*pb.DrainResponse, error) {
	return onLeader(ctx, s, func() (*pb.DrainResponse, error) {
		n, err := s.b.Undrain(ctx, req.GetNodeId())
		return &pb.DrainResponse{Node: n}, err
	}, func(c *grpc.ClientConn, fctx context.Context) (*pb.DrainResponse, error) {
		return pb.NewAdminClient(c).Undrain(fctx, req)
	})
}

// AddPeer implements pb.AdminServer.
func (s *Service) AddPeer(ctx context.Context, req *pb.AddPeerRequest) (*pb.AddPeerResponse, error) {
	return onLeader(ctx, s, func() (*pb.AddPeerResponse, error) { return s.b.AddPeer(ctx, req) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.AddPeerResponse, error) {
			return pb.NewAdminClient(c).AddPeer(fctx, req)
		})
}

// RemovePeer implements pb.AdminServer.
func (s *Service) RemovePeer(ctx context.Context, req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	return onLeader(ctx, s, func() (*pb.RemovePeerResponse, error) {
		return &pb.RemovePeerResponse{}, s.b.RemovePeer(ctx, req.GetId())
	}, func(c *grpc.ClientConn, fctx context.Context) (*pb.RemovePeerResponse, error) {
		return pb.NewAdminClient(c).RemovePeer(fctx, req)
	})
}

// Models implements pb.AdminServer. Like Nodes, it reads on the leader when there is one, so an
// operator sees their own writes; without a leader it answers from local state.
func (s *Service) Models(ctx context.Context, req *pb.ModelsRequest) (*pb.ModelsResponse, error) {
	return leaderOrLocal(ctx, s, func() *pb.ModelsResponse { return s.b.Models(ctx) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.ModelsResponse, error) {
			return pb.NewAdminClient(c).Models(fctx, req)
		})
}

// SetModel implements pb.AdminServer.
func (s *Service) SetModel(ctx context.Context, req *pb.SetModelRequest) (*pb.SetModelResponse, error) {
	return onLeader(ctx, s, func() (*pb.SetModelResponse, error) {
		return &pb.SetModelResponse{}, s.b.SetModel(ctx, req.GetModel())
	}, func(c *grpc.ClientConn, fctx context.Context) (*pb.SetModelResponse, error) {
		return pb.NewAdminClient(c).SetModel(fctx, req)
	})
}

// RemoveModel implements pb.AdminServer.
func (s *Service) RemoveModel(ctx context.Context, req *pb.RemoveModelRequest) (*pb.RemoveModelResponse, error) {
	return onLeader(ctx, s, func() (*pb.RemoveModelResponse, error) {
		return &pb.RemoveModelResponse{}, s.b.RemoveModel(ctx, req.GetId())
	}, func(c *grpc.ClientConn, fctx context.Context) (*pb.RemoveModelResponse, error) {
		return pb.NewAdminClient(c).RemoveModel(fctx, req)
	})
}

// GetPolicy implements pb.AdminServer, reading on the leader when there is one.
func (s *Service) GetPolicy(ctx context.Context, req *pb.GetPolicyRequest) (*pb.PolicyResponse, error) {
	return leaderOrLocal(ctx, s, s.b.Policy,
		func(c *grpc.ClientConn, fctx context.Context) (*pb.PolicyResponse, error) {
			return pb.NewAdminClient(c).GetPolicy(fctx, req)
		})
}

// SetPolicy implements pb.AdminServer.
func (s *Service) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.PolicyResponse, error) {
	return onLeader(ctx, s, func() (*pb.PolicyResponse, error) { return s.b.SetPolicy(ctx, req.GetSpecJson()) },
		func(c *grpc.ClientConn, fctx context.Context) (*pb.PolicyResponse, error) {
			return pb.NewAdminClient(c).SetPolicy(fctx, req)
		})
}

// SnapshotSave implements pb.AdminServer: the node that answers takes the snapshot.
func (s *Service) SnapshotSave(ctx context.Context, _ *pb.SnapshotSaveRequest) (*pb.SnapshotSaveResponse, error) {
	return s.b.SnapshotSave(ctx)
}
