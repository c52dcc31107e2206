package bench

import (
	"context"
	"slices"
	"testing"
)

// The benchmark's receiver hands out blocks as the engine's block manager
// does: the order of a transfer's destination blocks changes its copy speed
// (a backward walk defeats the prefetchers), so it must stay the same from
// one transfer to the next.
func TestPoolHandsOutAscendingBlocksEveryTime(t *testing.T) {
	p := newPool(8)
	want := []int32{0, 1, 2, 3}
	for round := range 3 {
		got, err := p.Allocate(context.Background(), 4)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: got blocks %v, want %v", round, got, want)
		}
		p.Free(got)
	}
	if _, err := p.Allocate(context.Background(), 9); err == nil {
		t.Fatal("allocating more blocks than the pool holds succeeded")
	}
}
