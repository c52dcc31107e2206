package grpcx

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/transport"
	"github.com/tandemserve/tandem/transport/transporttest"
)

// An idle stream that ended while it waited (here: cancelled under the
// Conn's feet, as a dropped stream would be) costs the next transfer
// nothing: its Open is sent again on a fresh stream.
func TestOpenStream_ReplacesEndedIdleStream(t *testing.T) {
	spec := transporttest.Spec()
	alloc := transporttest.NewAllocator(spec.Blocks)
	src, err := transport.NewHostMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Fill(src, 7)
	dst, err := transport.NewHostMemory(spec)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	rc := transport.DefaultReceiverConfig(transporttest.Descriptor("decode-1", spec))
	rc.Secret, rc.Logger = transporttest.Secret, quiet
	recv, err := transport.NewReceiver(rc, dst, alloc)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	cfg := DefaultConfig()
	cfg.Insecure, cfg.Logger = true, quiet
	srv, err := NewServer(cfg, recv)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(lis) }()
	defer func() { srv.Close(); wg.Wait() }()
	ctx := context.Background()
	c, err := Dial(ctx, cfg, lis.Addr().String(), transporttest.Descriptor("prefill-1", spec))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	idle := func() []*pipe {
		c.mu.Lock()
		defer c.mu.Unlock()
		return append([]*pipe(nil), c.idle...)
	}
	for i, id := range []string{"first", "second"} {
		if i == 1 {
			before := idle()
			if len(before) != 1 {
				t.Fatalf("%d idle streams after a clean transfer, want 1", len(before))
			}
			before[0].cancel()
		}
		g, err := transport.IssueGrant(transporttest.Secret, id, 1, "decode-1", time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		lease, err := c.Reserve(ctx, g, 3)
		if err != nil {
			t.Fatal(err)
		}
		pairs := make([]transport.BlockPair, len(lease.Blocks))
		for j, b := range lease.Blocks {
			pairs[j] = transport.BlockPair{Src: int32(j), Dst: b}
		}
		out, err := transport.Push(ctx, c, src, transport.Plan{Grant: g, Pairs: pairs})
		if err != nil {
			t.Fatalf("transfer %q: %v", id, err)
		}
		for l := range spec.Layers {
			if err := out.SendLayer(ctx, l); err != nil {
				t.Fatalf("transfer %q: %v", id, err)
			}
		}
		if _, err := out.Commit(ctx); err != nil {
			t.Fatalf("transfer %q: %v", id, err)
		}
		blocks, err := recv.Ready(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := transporttest.SameBlocks(src, dst, pairs); err != nil {
			t.Error(err)
		}
		alloc.Claim(blocks)
	}
	if got := len(idle()); got != 1 {
		t.Errorf("%d idle streams after the retry, want 1", got)
	}
}
