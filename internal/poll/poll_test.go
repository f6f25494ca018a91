package poll

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	if err := Until(t.Context(), time.Millisecond, func() bool { n++; return n == 3 }); err != nil || n != 3 {
		t.Fatalf("Until = %v after %d checks, want nil after 3", err, n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Until(ctx, time.Millisecond, func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Until on a canceled context = %v", err)
	}
	if err := Until(ctx, time.Millisecond, func() bool { return true }); err != nil {
		t.Fatalf("a condition that holds at once: %v", err)
	}
}

func TestCheck(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	if err := Check(t.Context(), time.Millisecond, func() (bool, error) {
		n++
		if n == 2 {
			return false, boom
		}
		return false, nil
	}); !errors.Is(err, boom) || n != 2 {
		t.Fatalf("Check = %v after %d calls, want boom after 2", err, n)
	}
	if err := Check(t.Context(), time.Millisecond, func() (bool, error) { return true, nil }); err != nil {
		t.Fatal(err)
	}
}

func TestT(t *testing.T) {
	n := 0
	T(t, "three checks", func() bool { n++; return n >= 3 })
	Err(t, "no error", func() error { return nil })
}
