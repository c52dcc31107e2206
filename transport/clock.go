package transport

import "time"

// Clock is the transport's time source; leases expire by it. Tests use a
// fake that advances on command (transporttest.FakeClock).
type Clock interface {
	Now() time.Time
	// After delivers once, at or after d from now.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

var _ Clock = SystemClock{}

// Now returns time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
