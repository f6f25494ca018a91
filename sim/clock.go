package sim

import (
	"sync/atomic"
	"time"
)

// Clock is the simulated time of a network: the wall clock plus an offset
// that only grows. Every node reads it, each with its own skew (see
// Network.Now), to sign and check records; Advance moves it forward so that
// records age and expire without waiting for them. kad-dht's own timers
// (request timeouts, its value store's age limit) stay on the wall clock.
// It is safe for concurrent use.
type Clock struct {
	offset atomic.Int64 // nanoseconds
}

// Now returns the simulated time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d; a negative d does nothing.
func (c *Clock) Advance(d time.Duration) {
	if d > 0 {
		c.offset.Add(int64(d))
	}
}

// AdvanceTo moves the clock forward to t if it is behind it.
func (c *Clock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// Offset returns how far the clock has been moved ahead of the wall clock.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }
