package worker

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tandemv1 "github.com/tandemserve/tandem/proto/tandem/v1"
)

// Client is a gateway's connection to one worker. Safe for concurrent use.
type Client struct {
	addr string
	conn *grpc.ClientConn
	rpc  tandemv1.WorkerClient
}

// Dial connects to the worker at addr (host:port). Workers listen on the
// cluster network; the KV path has its own authenticated transport. opts
// add to (and may override) the plaintext default.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("worker: dial %s: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, rpc: tandemv1.NewWorkerClient(conn)}, nil
}

// Addr is the worker's address.
func (c *Client) Addr() string { return c.addr }

// RPC exposes the generated client for the disaggregated legs.
func (c *Client) RPC() tandemv1.WorkerClient { return c.rpc }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Run streams req's tokens from the worker into emit and returns the finish
// reason. An emit error cancels the request and is returned unchanged.
func (c *Client) Run(ctx context.Context, req *tandemv1.RunRequest, emit func(int32) error) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Run(ctx, req)
	if err != nil {
		return "", err
	}
	return Consume(stream, emit)
}

// Load asks the worker for its occupancy.
func (c *Client) Load(ctx context.Context) (*tandemv1.LoadResponse, error) {
	return c.rpc.Load(ctx, &tandemv1.LoadRequest{})
}

// TokenStream is the receiving half of Run and Attach.
type TokenStream interface {
	Recv() (*tandemv1.TokenEvent, error)
}

// Consume reads events into emit until the finish event and returns its
// reason. A stream that ends without one fails with ErrStreamEnded, so a
// worker that dies mid-stream is never mistaken for a finished request.
func Consume(stream TokenStream, emit func(int32) error) (string, error) {
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return "", ErrStreamEnded
		}
		if err != nil {
			return "", err
		}
		if ev.Token != nil {
			if err := emit(ev.GetToken()); err != nil {
				return "", err
			}
			continue
		}
		if ev.GetFinishReason() == "" {
			return "", fmt.Errorf("%w: empty event", ErrStreamEnded)
		}
		return ev.GetFinishReason(), nil
	}
}
