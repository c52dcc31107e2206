// Package client is the Go client that workers, gateways and tandemctl use to talk to the
// coordinators.
//
// A Client knows a list of coordinator addresses. Any coordinator forwards leader-only calls to
// the leader, so the client only has to find a live one: it sticks to the last coordinator that
// answered and, on Unavailable (node down, no leader yet, leadership changing), moves to the next
// address and retries with capped exponential backoff until the call's context ends. Errors that
// retrying cannot fix (bad request, no capacity, permission) return at once, mapped to this
// package's sentinels so callers use errors.Is instead of inspecting gRPC codes.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Sentinel errors; the gRPC status is wrapped alongside for detail.
var (
	ErrNoCapacity       = errors.New("client: no worker can take the request")
	ErrUnreachable      = errors.New("client: no coordinator reachable")
	ErrUnauthenticated  = errors.New("client: not authenticated (check the admin token or certificate)")
	ErrPermissionDenied = errors.New("client: permission denied")
	ErrInvalid          = errors.New("client: invalid request")
	ErrNotFound         = errors.New("client: not found")
	ErrConflict         = errors.New("client: state conflict")
	ErrConfig           = errors.New("client: invalid config")
)

// Config configures a Client.
type Config struct {
	Addrs []string
	// Token is sent as a bearer token (admin calls).
	Token string
	// TLS, when set, is used for every connection; otherwise connections are plaintext.
	TLS *tls.Config
	// MaxBackoff caps the wait between retries.
	MaxBackoff time.Duration
	Logger     *slog.Logger
}

// Client talks to a coordinator cluster. Safe for concurrent use.
type Client struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	conns []*grpc.ClientConn
	cur   int
}

// New creates connections lazily; it does no I/O.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("%w: no coordinator addresses", ErrConfig)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: cfg.Token, secure: cfg.TLS != nil}))
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	for _, a := range cfg.Addrs {
		conn, err := grpc.NewClient(a, opts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%w: address %q: %w", ErrConfig, a, err)
		}
		c.conns = append(c.conns, conn)
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	var errs []error
	for _, conn := range c.conns {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so development clusters without TLS still work; operators are
// told in the docs to use TLS whenever a token crosses a network.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

// call runs fn against coordinators until it succeeds, fails permanently, or ctx ends.
func call[T any](ctx context.Context, c *Client, fn func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	backoff := 20 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		i := c.cur
		c.mu.Unlock()
		out, err := fn(ctx, c.conns[i])
		if err == nil {
			return out, nil
		}
		var zero T
		if !retryable(err) || ctx.Err() != nil {
			if ctx.Err() != nil && lastErr != nil {
				return zero, fmt.Errorf("%w: %w (last error: %w)", ErrUnreachable, ctx.Err(), lastErr)
			}
			return zero, mapErr(err)
		}
		lastErr = err
		c.mu.Lock()
		if c.cur == i {
			c.cur = (i + 1) % len(c.conns)
		}
		c.mu.Unlock()
		// Try every address once quickly before sleeping: the next one is likely alive.
		if (attempt+1)%len(c.conns) != 0 {
			continue
		}
		c.log.Debug("coordinator call failed; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%w: %w (last error: %w)", ErrUnreachable, ctx.Err(), lastErr)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

func retryable(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.Unavailable
}

// mapErr turns a gRPC status into this package's sentinels, keeping the message.
func mapErr(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	switch s.Code() {
	case codes.ResourceExhausted:
		sentinel = ErrNoCapacity
	case codes.Unauthenticated:
		sentinel = ErrUnauthenticated
	case codes.PermissionDenied:
		sentinel = ErrPermissionDenied
	case codes.InvalidArgument:
		sentinel = ErrInvalid
	case codes.NotFound:
		sentinel = ErrNotFound
	case codes.FailedPrecondition:
		sentinel = ErrConflict
	case codes.Unavailable:
		sentinel = ErrUnreachable
	case codes.Canceled:
		return fmt.Errorf("client: %s: %w", s.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("client: %s: %w", s.Message(), context.DeadlineExceeded)
	default:
		return fmt.Errorf("client: %w", err)
	}
	return fmt.Errorf("%w: %s", sentinel, s.Message())
}
