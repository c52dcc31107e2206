package transport

import "time"

// Clock is the transport's time source; leases expire by it. Tests use a
// fake that advances on command (transporttest.FakeClock).
type Clock interface {
	Now() time.Time
	// At delivers once the clock reads t or later. Taking an instant rather
	// than a duration keeps a fake clock race-free: advancing it between a
	// caller's Now and At cannot push the deadline back.
	At(t time.Time) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

var _ Clock = SystemClock{}

// Now returns time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// At returns a channel that fires at t.
func (SystemClock) At(t time.Time) <-chan time.Time { return time.After(time.Until(t)) }
