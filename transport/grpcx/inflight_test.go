package grpcx

import (
	"testing"
	"time"
)

func TestInflight_CountsAliasedSegments(t *testing.T) {
	var f inflight
	region := make([]byte, 1<<20)
	small := make([]byte, 16)
	bs := f.wrap(small) // copied: gRPC cannot count it
	small[0] = 1
	if bs.ReadOnlyData()[0] != 0 {
		t.Fatal("a small segment must be copied, not aliased")
	}
	b1, b2 := f.wrap(region[:4096]), f.wrap(region[4096:8192])
	if &b1.ReadOnlyData()[0] != &region[0] {
		t.Fatal("a large segment must alias the region")
	}
	if f.wait(10 * time.Millisecond) {
		t.Fatal("wait returned while gRPC holds two segments")
	}
	b1.Free()
	b2.Free()
	bs.Free()
	if !f.wait(time.Second) {
		t.Fatal("wait did not return after every segment was released")
	}
}
