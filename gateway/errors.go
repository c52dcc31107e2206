package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrInvalidArgument reports a bad request parameter; a *FieldError
	// names the field.
	ErrInvalidArgument = errors.New("gateway: invalid argument")
	// ErrUnknownModel reports a model this gateway does not serve.
	ErrUnknownModel = errors.New("gateway: unknown model")
	// ErrTooLong reports a prompt plus max_tokens over the context window.
	ErrTooLong = errors.New("gateway: prompt plus max_tokens exceeds the context window")
	// ErrOverloaded reports that admitting the request would pass the limit
	// on admitted tokens; the client should retry later.
	ErrOverloaded = errors.New("gateway: overloaded")
	// ErrUnauthenticated reports a missing or wrong API key.
	ErrUnauthenticated = errors.New("gateway: missing or invalid API key")
	// ErrNoWorkers reports that no worker can take the request.
	ErrNoWorkers = errors.New("gateway: no worker available")
	// ErrInvalidConfig reports a bad Config.
	ErrInvalidConfig = errors.New("gateway: invalid config")
)

// FieldError is an invalid request parameter.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("gateway: invalid %s: %s", e.Field, e.Msg) }

// Unwrap makes errors.Is(err, ErrInvalidArgument) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidArgument }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// httpStatus maps an error to an HTTP status and an OpenAI error type: the
// one place the HTTP edge turns errors into statuses.
func httpStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized, "authentication_error"
	case errors.Is(err, ErrUnknownModel):
		return http.StatusNotFound, "not_found_error"
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrTooLong):
		return http.StatusBadRequest, "invalid_request_error"
	case errors.Is(err, ErrOverloaded):
		return http.StatusTooManyRequests, "rate_limit_error"
	case errors.Is(err, ErrNoWorkers):
		return http.StatusServiceUnavailable, "server_error"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "server_error"
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.InvalidArgument:
			return http.StatusBadRequest, "invalid_request_error"
		case codes.NotFound:
			return http.StatusNotFound, "not_found_error"
		case codes.ResourceExhausted:
			return http.StatusTooManyRequests, "rate_limit_error"
		case codes.Unavailable:
			return http.StatusServiceUnavailable, "server_error"
		}
	}
	return http.StatusInternalServerError, "server_error"
}

// grpcStatus maps an error to a gRPC status: the gRPC edge's one mapping.
// Context errors keep their own codes.
func grpcStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, ErrUnknownModel):
		code = codes.NotFound
	case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrTooLong):
		code = codes.InvalidArgument
	case errors.Is(err, ErrOverloaded):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrNoWorkers):
		code = codes.Unavailable
	default:
		if s, ok := status.FromError(err); ok {
			return s.Err()
		}
	}
	return status.Error(code, err.Error())
}
