package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tandemserve/tandem/coordinator"
	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/placement"
	"github.com/tandemserve/tandem/coordinator/token"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{ErrUnauthenticated, codes.Unauthenticated},
		{coordinator.ErrNotLeader, codes.Unavailable},
		{fmt.Errorf("wrapped: %w", coordinator.ErrNoLeader), codes.Unavailable},
		{ErrForwardLoop, codes.Unavailable},
		{placement.ErrNoCapacity, codes.ResourceExhausted},
		{coordinator.ErrUnknownNode, codes.NotFound},
		{coordinator.ErrUnknownModel, codes.NotFound},
		{fsm.ErrNotFound, codes.NotFound},
		{coordinator.ErrStateConflict, codes.FailedPrecondition},
		{coordinator.ErrBadPlacement, codes.PermissionDenied},
		{token.ErrInvalid, codes.PermissionDenied},
		{placement.ErrInvalidRequest, codes.InvalidArgument},
		{placement.ErrConfig, codes.InvalidArgument},
		{coordinator.ErrInvalid, codes.InvalidArgument},
		{errors.New("boom"), codes.Internal},
		{status.Error(codes.Aborted, "from leader"), codes.Aborted},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := status.Code(toStatus(tt.err)); got != tt.want {
				t.Fatalf("code = %s, want %s", got, tt.want)
			}
		})
	}
}

// fakeBackend answers the few calls these tests make; anything else panics through the nil
// embedded interface, which would fail the test loudly.
type fakeBackend struct {
	Backend
	leader bool
}

func (f *fakeBackend) IsLeader() bool                  { return f.leader }
func (f *fakeBackend) LeaderGRPCAddr() (string, error) { return "", coordinator.ErrNoLeader }
func (f *fakeBackend) Status(context.Context) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{AnsweredBy: "fake"}, nil
}
func (f *fakeBackend) Place(_ context.Context, r *pb.PlaceRequest) (*pb.Placement, error) {
	return &pb.Placement{RequestId: r.GetRequestId()}, nil
}

func serve(t *testing.T, b Backend, cfg Config) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	svc := New(b, cfg)
	gs := grpc.NewServer(svc.ServerOptions()...)
	svc.RegisterServices(gs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
		svc.Close()
	})
	return conn
}

func TestAdminToken(t *testing.T) {
	conn := serve(t, &fakeBackend{leader: true}, Config{AdminToken: "tok"})
	admin, coord := pb.NewAdminClient(conn), pb.NewCoordinatorClient(conn)
	tests := []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"no token", nil, codes.Unauthenticated},
		{"wrong token", []string{"authorization", "Bearer nope"}, codes.Unauthenticated},
		{"not bearer", []string{"authorization", "tok"}, codes.Unauthenticated},
		{"right token", []string{"authorization", "Bearer tok"}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			}
			_, err := admin.Status(ctx, &pb.StatusRequest{})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code = %s, want %s (%v)", got, tt.want, err)
			}
		})
	}
	// The worker API is not behind the admin token (mTLS protects it when configured).
	if _, err := coord.Place(context.Background(), &pb.PlaceRequest{RequestId: "r"}); err != nil {
		t.Fatalf("worker call refused: %v", err)
	}
}

func TestFollowerWithoutLeaderIsUnavailable(t *testing.T) {
	conn := serve(t, &fakeBackend{leader: false}, Config{})
	_, err := pb.NewCoordinatorClient(conn).Place(context.Background(), &pb.PlaceRequest{RequestId: "r"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("code = %s, want Unavailable", status.Code(err))
	}
	// A call already forwarded once is never forwarded again.
	ctx := metadata.AppendToOutgoingContext(context.Background(), forwardedKey, "1")
	_, err = pb.NewCoordinatorClient(conn).Place(ctx, &pb.PlaceRequest{RequestId: "r"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("forwarded call: code = %s, want Unavailable", status.Code(err))
	}
}
