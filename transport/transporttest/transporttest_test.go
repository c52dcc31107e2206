package transporttest

import (
	"context"
	"testing"
	"time"
)

func TestFakeClock_FiresOnlyWhenAdvancedPastDeadline(t *testing.T) {
	c := NewFakeClock()
	start := c.Now()
	tests := []struct {
		name    string
		at      time.Duration
		advance time.Duration
		fired   bool
	}{
		{"deadline in the past fires at once", -time.Second, 0, true},
		{"not yet", 2 * time.Second, time.Second, false},
		{"exactly at the deadline", 3 * time.Second, 3 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := c.At(c.Now().Add(tc.at))
			c.Advance(tc.advance)
			select {
			case <-ch:
				if !tc.fired {
					t.Fatal("fired early")
				}
			default:
				if tc.fired {
					t.Fatal("did not fire")
				}
			}
		})
	}
	if got := c.Now().Sub(start); got != 4*time.Second {
		t.Errorf("clock moved %v, want 4s", got)
	}
}

func TestAllocator_DetectsDoubleFree(t *testing.T) {
	a := NewAllocator(4)
	blocks, err := a.Allocate(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(context.Background(), 2); err == nil {
		t.Fatal("allocated past the pool")
	}
	a.Free(blocks)
	a.Free(blocks[:1])
	st := a.Stats()
	if st.InUse != 0 || st.Allocs != 1 || st.Frees != 2 || len(st.Errors) != 1 {
		t.Fatalf("stats %+v, want one double free recorded", st)
	}
}
