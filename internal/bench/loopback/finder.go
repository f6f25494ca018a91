package loopback

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// PollInterval is the pause between two finds while Finders waits for a
// change. Together with the rotation over finders it keeps each finder well
// under a storer's per-peer rate limit (20 requests/s).
const PollInterval = 20 * time.Millisecond

// Finders are warm finders: running sidecars whose local API answers
// finds. Each find goes to the next one in turn, so that no single node
// hits the storers' per-peer rate limits. Safe for concurrent use.
type Finders struct {
	mu   sync.Mutex
	list []*Sidecar
	next int
}

// NewFinders returns finders that rotate over list.
func NewFinders(list []*Sidecar) *Finders { return &Finders{list: list} }

// Find runs one warm find of name on the next finder.
func (f *Finders) Find(ctx context.Context, name string) (*FindResult, error) {
	return f.turn().Find(ctx, name)
}

// FindFresh runs one fresh find (Sidecar.FindFresh) of name on the next
// finder.
func (f *Finders) FindFresh(ctx context.Context, name string) (*FindResult, error) {
	return f.turn().FindFresh(ctx, name)
}

func (f *Finders) turn() *Sidecar {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.list[f.next%len(f.list)]
	f.next++
	return s
}

// WaitListed runs fresh warm finds of name (FindFresh: what the network
// holds, not a node's cached result, which can be one refresh old),
// PollInterval apart, until one lists endpoint (listed true) or one does
// not (listed false), and returns when that find returned. Finds that fail
// are retried; ctx bounds the wait.
func (f *Finders) WaitListed(ctx context.Context, name, endpoint string, listed bool) (time.Time, error) {
	var last error
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := f.FindFresh(fctx, name)
		cancel()
		now := time.Now()
		if err == nil && res.Lists(endpoint) == listed {
			return now, nil
		}
		last = err
		select {
		case <-ctx.Done():
			state := "listed"
			if !listed {
				state = "gone"
			}
			return now, fmt.Errorf("loopback: %s at %s not %s before the deadline (last find error: %v): %w", name, endpoint, state, last, ctx.Err())
		case <-time.After(PollInterval):
		}
	}
}
