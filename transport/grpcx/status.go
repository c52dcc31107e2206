package grpcx

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemserve/tandem/transport"
)

// errorDomain tags the ErrorInfo detail that carries a transport reason.
const errorDomain = "transport.tandem"

var codeOf = []struct {
	err  error
	code codes.Code
}{
	{transport.ErrIncompatible, codes.FailedPrecondition},
	{transport.ErrUnauthenticated, codes.PermissionDenied},
	{transport.ErrTokenExpired, codes.PermissionDenied},
	{transport.ErrUnknownTransfer, codes.NotFound},
	{transport.ErrDuplicate, codes.AlreadyExists},
	{transport.ErrStaleEpoch, codes.FailedPrecondition},
	{transport.ErrLeaseExpired, codes.DeadlineExceeded},
	{transport.ErrCancelled, codes.Canceled},
	{transport.ErrChecksum, codes.DataLoss},
	{transport.ErrDuplicateChunk, codes.InvalidArgument},
	{transport.ErrProtocol, codes.InvalidArgument},
	{transport.ErrExhausted, codes.ResourceExhausted},
	{transport.ErrPeerLost, codes.Unavailable},
	{transport.ErrTimeout, codes.DeadlineExceeded},
	{transport.ErrClosed, codes.Unavailable},
	{transport.ErrInvalid, codes.InvalidArgument},
}

// toStatus is the one place transport errors become gRPC statuses; the
// sentinel travels as an ErrorInfo reason so the client rebuilds it.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			code = c.code
			break
		}
	}
	st := status.New(code, err.Error())
	if reason := transport.Reason(err); reason != "" {
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// fromStatus turns an RPC error back into a transport error. Transport
// failures without a reason (a dropped connection) become ErrPeerLost or
// ErrTimeout; the caller's own cancellation passes through unchanged.
func fromStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return fmt.Errorf("%w: %w", transport.ErrTimeout, ctxErr)
		}
		return ctxErr
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %w", transport.ErrPeerLost, err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return transport.ErrorFromReason(info.GetReason(), st.Message())
		}
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", transport.ErrTimeout, st.Message())
	case codes.Unavailable, codes.Canceled, codes.Aborted:
		return fmt.Errorf("%w: %s", transport.ErrPeerLost, st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%w: %s", transport.ErrUnauthenticated, st.Message())
	}
	return fmt.Errorf("%w: %s: %s", transport.ErrProtocol, st.Code(), st.Message())
}
