package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMapErr(t *testing.T) {
	tests := []struct {
		code codes.Code
		want error
	}{
		{codes.ResourceExhausted, ErrNoCapacity},
		{codes.Unauthenticated, ErrUnauthenticated},
		{codes.PermissionDenied, ErrPermissionDenied},
		{codes.InvalidArgument, ErrInvalid},
		{codes.NotFound, ErrNotFound},
		{codes.FailedPrecondition, ErrConflict},
		{codes.Unavailable, ErrUnreachable},
		{codes.Canceled, context.Canceled},
		{codes.DeadlineExceeded, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			if err := mapErr(status.Error(tt.code, "x")); !errors.Is(err, tt.want) {
				t.Fatalf("mapErr(%s) = %v, want %v", tt.code, err, tt.want)
			}
		})
	}
}

func TestUnreachableGivesUpWithContext(t *testing.T) {
	c, err := New(Config{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Status(ctx)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("took %s to give up", time.Since(start))
	}
}

func TestNewRejectsEmpty(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v, want ErrConfig", err)
	}
}
