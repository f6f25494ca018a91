// Package poll waits for a condition by checking it at an interval: the one
// poll-until helper of the simulator and of the tests, which wait on
// conditions, never on sleeps, and bound the wait by a context (a test's
// deadline), never by a wall-clock figure of their own.
package poll

import (
	"context"
	"testing"
	"time"
)

// Until checks cond at once and then every interval until it holds or ctx
// ends; it returns nil once cond held, else ctx's error.
func Until(ctx context.Context, interval time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if cond() {
				return nil
			}
		}
	}
}

// Check is Until for a condition that can fail: it calls f at once and then
// every interval until f reports done or an error, or ctx ends, and
// returns f's error or ctx's.
func Check(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	var err error
	if e := Until(ctx, interval, func() bool {
		var ok bool
		ok, err = f()
		return ok || err != nil
	}); e != nil {
		return e
	}
	return err
}

// Interval is how often T checks its condition.
const Interval = 5 * time.Millisecond

// T waits until cond holds, checking it every Interval, for as long as the
// test may run (its -timeout deadline, which fails it with a stack dump),
// and fails the test, naming what, if the test's context ends first.
func T(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if err := Until(t.Context(), Interval, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Err waits like T for f to return nil, and fails the test with f's last
// error if the test's context ends first.
func Err(t testing.TB, what string, f func() error) {
	t.Helper()
	var last error
	if err := Until(t.Context(), Interval, func() bool { last = f(); return last == nil }); err != nil {
		t.Fatalf("waiting for %s: %v (last: %v)", what, err, last)
	}
}
