package sim

import (
	"sync/atomic"
	"time"
)

// Clock is the simulated time of a network: the wall clock plus an offset
// that only grows, or, while frozen (Freeze), one instant. Every node reads it, each with its own skew (see
// Network.Now), to sign and check records; Advance moves it forward so that
// records age and expire without waiting for them. kad-dht's own timers
// (request timeouts, its value store's age limit) stay on the wall clock.
// It is safe for concurrent use.
type Clock struct {
	offset atomic.Int64 // nanoseconds
	frozen atomic.Int64 // while frozen, the time in Unix nanoseconds; else 0
}

// Now returns the simulated time.
func (c *Clock) Now() time.Time {
	if f := c.frozen.Load(); f != 0 {
		return time.Unix(0, f)
	}
	return time.Now().Add(time.Duration(c.offset.Load()))
}

// Advance moves the clock forward by d; a negative d does nothing.
func (c *Clock) Advance(d time.Duration) {
	if d > 0 {
		c.offset.Add(int64(d))
		if c.frozen.Load() != 0 {
			c.frozen.Add(int64(d))
		}
	}
}

// Freeze stops the clock at its present time until Thaw: what a node
// counts in time (its rate limit, record lifetimes) then depends on what
// happens, not on how fast the machine runs it. It is not meant to be
// called beside Advance or another Freeze.
func (c *Clock) Freeze() { c.frozen.Store(c.Now().UnixNano()) }

// Thaw lets a frozen clock run again from the time it was frozen at.
func (c *Clock) Thaw() {
	f := c.frozen.Load()
	if f == 0 {
		return
	}
	c.offset.Store(f - time.Now().UnixNano())
	c.frozen.Store(0)
}

// AdvanceTo moves the clock forward to t if it is behind it.
func (c *Clock) AdvanceTo(t time.Time) { c.Advance(t.Sub(c.Now())) }

// Offset returns how far the clock has been moved ahead of the wall clock.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }
