// Package api exposes a coordinator over gRPC: the Coordinator service for workers and gateways
// and the Admin service for operators.
//
// Every coordinator accepts every call. Calls that need the leader are forwarded by a follower to
// the leader's gRPC address (from the replicated state) with the caller's metadata, so clients
// need to know just one live coordinator. A forwarded call carries a hop marker and is never
// forwarded twice, so a leadership change in mid-flight yields Unavailable (which clients retry)
// rather than a forwarding loop. Errors become gRPC status codes in exactly one place (toStatus).
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/placement"
	"github.com/tandemserve/tandem/coordinator/token"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// Sentinel errors.
var (
	ErrUnauthenticated = errors.New("api: missing or invalid admin token")
	ErrForwardLoop     = errors.New("api: forwarded call reached a non-leader")
)

// forwardedKey marks a call forwarded by a follower.
const forwardedKey = "x-tandem-forwarded"

// Config configures the gRPC layer.
type Config struct {
	// AdminToken, when set, is required as "authorization: Bearer <token>" on Admin calls.
	AdminToken string
	// RequireClientCert means the server's TLS config verifies client certificates, which then
	// authorise Admin calls without a token.
	RequireClientCert bool
	// DialOptions are used to reach the leader when forwarding (transport credentials).
	DialOptions []grpc.DialOption
	Logger      *slog.Logger
}

// Backend is what the gRPC layer needs from a coordinator.
type Backend interface {
	IsLeader() bool
	LeaderGRPCAddr() (string, error)

	Register(context.Context, *pb.RegisterRequest) (*pb.RegisterResponse, error)
	ReportLoad(context.Context, *pb.ReportLoadRequest) (*pb.ReportLoadResponse, error)
	Place(context.Context, *pb.PlaceRequest) (*pb.Placement, error)
	ReportFailure(context.Context, *pb.ReportFailureRequest) (*pb.Placement, error)
	Resume(context.Context, *pb.ResumeRequest) (*pb.Placement, error)

	Status(context.Context) (*pb.StatusResponse, error)
	Nodes(ctx context.Context, role string) *pb.NodesResponse
	Drain(ctx context.Context, id string) (*pb.NodeStatus, error)
	Undrain(ctx context.Context, id string) (*pb.NodeStatus, error)
	AddPeer(context.Context, *pb.AddPeerRequest) (*pb.AddPeerResponse, error)
	RemovePeer(ctx context.Context, id string) error
	Models(context.Context) *pb.ModelsResponse
	SetModel(context.Context, *pb.Model) error
	RemoveModel(ctx context.Context, id string) error
	Policy() *pb.PolicyResponse
	SetPolicy(ctx context.Context, specJSON string) (*pb.PolicyResponse, error)
	SnapshotSave(context.Context) (*pb.SnapshotSaveResponse, error)
}

var _ Backend = (*coordinator.Server)(nil)

// Service implements both gRPC services over a Backend.
type Service struct {
	pb.UnimplementedCoordinatorServer
	pb.UnimplementedAdminServer

	b   Backend
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // leader address -> connection
}

var (
	_ pb.CoordinatorServer = (*Service)(nil)
	_ pb.AdminServer       = (*Service)(nil)
)

// New returns a Service.
func New(b Backend, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.DialOptions) == 0 {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Service{b: b, cfg: cfg, log: cfg.Logger.With("component", "coordinator-api"), conns: map[string]*grpc.ClientConn{}}
}

// ServerOptions returns the interceptors (auth, then error mapping) for grpc.NewServer; add
// transport credentials yourself.
func (s *Service) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.errorInterceptor, s.authInterceptor)}
}

// RegisterServices registers both services on srv.
func (s *Service) RegisterServices(srv *grpc.Server) {
	pb.RegisterCoordinatorServer(srv, s)
	pb.RegisterAdminServer(srv, s)
}

// Close closes the forwarding connections.
func (s *Service) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for addr, c := range s.conns {
		errs = append(errs, c.Close())
		delete(s.conns, addr)
	}
	return errors.Join(errs...)
}

func (s *Service) authInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/"+pb.Admin_ServiceDesc.ServiceName+"/") {
		if err := s.authorizeAdmin(ctx); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Service) authorizeAdmin(ctx context.Context) error {
	if s.cfg.AdminToken != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get("authorization") {
			got, ok := strings.CutPrefix(v, "Bearer ")
			if ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) == 1 {
				return nil
			}
		}
		if !s.cfg.RequireClientCert {
			return ErrUnauthenticated
		}
	}
	if s.cfg.RequireClientCert {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
				return nil
			}
		}
		return ErrUnauthenticated
	}
	return nil // no token and no mTLS configured: an open development cluster
}

func (s *Service) errorInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// toStatus is the single place where errors become gRPC status codes.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err // already a status (from a forwarded call): pass through unchanged
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, coordinator.ErrNotLeader), errors.Is(err, coordinator.ErrNoLeader),
		errors.Is(err, coordinator.ErrClosed), errors.Is(err, ErrForwardLoop):
		code = codes.Unavailable
	case errors.Is(err, placement.ErrNoCapacity):
		code = codes.ResourceExhausted
	case errors.Is(err, coordinator.ErrUnknownNode), errors.Is(err, coordinator.ErrUnknownModel), errors.Is(err, fsm.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, coordinator.ErrStateConflict), errors.Is(err, coordinator.ErrNothingToDo):
		code = codes.FailedPrecondition
	case errors.Is(err, coordinator.ErrBadPlacement), errors.Is(err, token.ErrInvalid):
		code = codes.PermissionDenied
	case errors.Is(err, coordinator.ErrInvalid), errors.Is(err, placement.ErrInvalidRequest),
		errors.Is(err, placement.ErrConfig), errors.Is(err, fsm.ErrInvalid):
		code = codes.InvalidArgument
	}
	return status.Error(code, err.Error())
}

// leaderConn returns a connection to the leader, or an error when this node should answer
// itself (it is the leader) or cannot forward (no leader, or the call was already forwarded).
func (s *Service) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return nil, ErrForwardLoop
	}
	addr, err := s.b.LeaderGRPCAddr()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, s.cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("api: dial leader %s: %w", addr, err)
	}
	s.conns[addr] = c
	return c, nil
}

// forwardCtx copies the caller's metadata (the admin token) and adds the hop marker.
func forwardCtx(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	md.Set(forwardedKey, "1")
	return metadata.NewOutgoingContext(ctx, md)
}

// onLeader runs local on the leader, and otherwise calls remote on the leader's connection.
func onLeader[T any](ctx context.Context, s *Service, local func() (T, error), remote func(*grpc.ClientConn, context.Context) (T, error)) (T, error) {
	if s.b.IsLeader() {
		return local()
	}
	c, err := s.leaderConn(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	return remote(c, forwardCtx(ctx))
}
