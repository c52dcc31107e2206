package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/engine/kvcache"
	"github.com/tandemserve/tandem/engine/scheduler"
)

// TestExportImport runs a request's prompt on a "prefill" engine, moves its
// KV blocks byte for byte into a "decode" engine (as the transport does) and
// checks the decode engine continues exactly as one engine running the whole
// request would.
func TestExportImport(t *testing.T) {
	m := tiny(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, prompt := range prompts() {
		want := run(t, start(t, m, defaultSetup()), []engine.Request{{Tokens: prompt, Params: greedy(8)}})[0]

		pre := start(t, m, defaultSetup())
		h, err := pre.Add(ctx, engine.Request{Tokens: prompt, Params: greedy(1), KeepKV: true})
		if err != nil {
			t.Fatal(err)
		}
		first, _, err := h.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want[:1], first); diff != "" {
			t.Fatalf("prefill's first token (-want +got):\n%s", diff)
		}
		src, n, ok := h.TakeKV()
		if !ok || n != len(prompt) {
			t.Fatalf("TakeKV = %v, %d tokens, ok %v; want the prompt's %d", src, n, ok, len(prompt))
		}
		if _, _, again := h.TakeKV(); again {
			t.Fatal("TakeKV succeeded twice")
		}

		dec := start(t, m, defaultSetup())
		dst, err := dec.Allocate(ctx, len(src))
		if err != nil {
			t.Fatal(err)
		}
		spec := pre.Cache().Spec()
		buf := make([]byte, spec.BlockBytes())
		for l := range spec.Layers {
			for i := range src {
				if err := pre.Cache().ReadBlock(l, int(src[i]), buf); err != nil {
					t.Fatal(err)
				}
				if err := dec.Cache().WriteBlock(l, int(dst[i]), buf); err != nil {
					t.Fatal(err)
				}
			}
		}
		pre.Free(src)
		req := engine.Request{Tokens: append(append([]int32(nil), prompt...), first[0]), Params: greedy(8), Generated: 1}
		hd, err := dec.AddPrefilled(ctx, req, dst, n)
		if err != nil {
			t.Fatal(err)
		}
		rest, _, err := hd.Collect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want[1:], rest); diff != "" {
			t.Errorf("prompt %v: decode after import (-want +got):\n%s", prompt, diff)
		}
		// Only decode rows ran: one per generated token, no prompt row.
		if l := dec.Load(); l.PromptTokens != 0 || l.DecodeTokens != uint64(len(want)-1) {
			t.Errorf("decode engine computed %d prompt rows and %d decode rows, want 0 and %d", l.PromptTokens, l.DecodeTokens, len(want)-1)
		}
	}
}

func TestAddPrefilledRejects(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	ctx := context.Background()
	blocks, err := e.Allocate(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Free(blocks)
	toks := []int32{1, 2, 3, 4, 5, 6}
	tests := []struct {
		name     string
		blocks   []int32
		computed int
	}{
		{"nothing computed", blocks, 0},
		{"all computed", blocks, len(toks)},
		{"too few blocks", blocks[:1], 5},
		{"unallocated block", []int32{blocks[0], 63}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.AddPrefilled(ctx, engine.Request{Tokens: toks, Params: greedy(4), Generated: 1}, tc.blocks, tc.computed)
			if !errors.Is(err, engine.ErrInvalidRequest) {
				t.Fatalf("err = %v, want ErrInvalidRequest", err)
			}
		})
	}
	if got := e.BlockManager().Refs(blocks[0]); got != 1 {
		t.Errorf("rejected import changed references: %d, want 1", got)
	}
}

func TestAllocateOutOfBlocks(t *testing.T) {
	m := tiny(t)
	e := start(t, m, setup{blocks: 4, blockSize: 4, sched: scheduler.Config{MaxSeqs: 2, MaxTokens: 8, ChunkSize: 8}})
	if _, err := e.Allocate(context.Background(), 5); !errors.Is(err, kvcache.ErrOutOfBlocks) {
		t.Fatalf("err = %v, want ErrOutOfBlocks", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Allocate(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestPinKVWhileRunning(t *testing.T) {
	m := tiny(t)
	e := start(t, m, defaultSetup())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := e.Add(ctx, engine.Request{Tokens: prompts()[2], Params: greedy(300)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Next(ctx); err != nil {
		t.Fatal(err)
	}
	blocks, n, err := e.PinKV(h)
	if err != nil {
		t.Fatal(err)
	}
	// At least the 26 prompt tokens are computed (decoding goes on): only
	// full blocks are pinned, never the block the next steps write.
	if bs := e.BlockManager().BlockSize(); n < 24 || n%bs != 0 || len(blocks) != n/bs {
		t.Fatalf("pinned %d blocks for %d tokens, want whole blocks covering at least 24", len(blocks), n)
	}
	h.Cancel()
	waitFor(t, func() bool { return e.Load().Running == 0 })
	// The pin keeps the blocks alive after the request is gone.
	for _, b := range blocks {
		if e.BlockManager().Refs(b) != 1 {
			t.Fatalf("block %d has %d references after cancel, want the pin's 1", b, e.BlockManager().Refs(b))
		}
	}
	e.Free(blocks)
	if _, _, err := e.PinKV(h); !errors.Is(err, engine.ErrInvalidRequest) {
		t.Errorf("PinKV of a finished request: %v, want ErrInvalidRequest", err)
	}
}

// TestLayerEvents checks layer-wise streaming: when a layer event arrives, the
// keys and values of its tokens in that layer are already final, every layer
// sees every prompt token exactly once in order, and layers come in order
// within a step.
func TestLayerEvents(t *testing.T) {
	m := tiny(t)
	e := start(t, m, setup{blocks: 32, blockSize: 4, sched: scheduler.Config{MaxSeqs: 4, MaxTokens: 32, ChunkSize: 8}})
	spec := e.Cache().Spec()
	prompt := prompts()[2] // 26 tokens: chunks of 8, 8, 8, 2
	type snap struct {
		layer, pos int
		k, v       []byte
	}
	var snaps []snap
	covered := make([]int, spec.Layers) // next expected token per layer
	lastLayer := -1
	var orderErr error
	buf := make([]byte, spec.BlockBytes())
	onLayer := func(ev engine.LayerEvent) {
		if ev.From != covered[ev.Layer] && orderErr == nil {
			orderErr = fmt.Errorf("layer %d: event for [%d,%d), expected from %d", ev.Layer, ev.From, ev.To, covered[ev.Layer])
		}
		if ev.Layer != lastLayer+1 && !(ev.Layer == 0 && lastLayer == spec.Layers-1) && orderErr == nil {
			orderErr = fmt.Errorf("layer %d after layer %d", ev.Layer, lastLayer)
		}
		lastLayer = ev.Layer
		covered[ev.Layer] = ev.To
		for p := ev.From; p < ev.To; p++ {
			blk, off := ev.Blocks[p/spec.BlockSize], p%spec.BlockSize
			if err := e.Cache().ReadBlock(ev.Layer, int(blk), buf); err != nil {
				orderErr = err
				return
			}
			rb := spec.RowBytes()
			snaps = append(snaps, snap{ev.Layer, p,
				bytes.Clone(buf[spec.KeyRowOffset(off) : spec.KeyRowOffset(off)+rb]),
				bytes.Clone(buf[spec.ValueRowOffset(off) : spec.ValueRowOffset(off)+rb])})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := e.Add(ctx, engine.Request{Tokens: prompt, Params: greedy(1), KeepKV: true, OnLayer: onLayer})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	blocks, n, ok := h.TakeKV()
	if !ok {
		t.Fatal("no KV kept")
	}
	defer e.Free(blocks)
	if orderErr != nil {
		t.Fatal(orderErr)
	}
	for l, c := range covered {
		if c != n {
			t.Errorf("layer %d: events covered %d tokens, want %d", l, c, n)
		}
	}
	if len(snaps) != spec.Layers*n {
		t.Fatalf("%d row snapshots, want %d", len(snaps), spec.Layers*n)
	}
	for _, s := range snaps {
		blk, off := blocks[s.pos/spec.BlockSize], s.pos%spec.BlockSize
		if err := e.Cache().ReadBlock(s.layer, int(blk), buf); err != nil {
			t.Fatal(err)
		}
		rb := spec.RowBytes()
		if !bytes.Equal(s.k, buf[spec.KeyRowOffset(off):spec.KeyRowOffset(off)+rb]) ||
			!bytes.Equal(s.v, buf[spec.ValueRowOffset(off):spec.ValueRowOffset(off)+rb]) {
			t.Fatalf("layer %d token %d: bytes at event time differ from the final cache", s.layer, s.pos)
		}
	}
}
