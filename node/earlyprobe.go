package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxEarlyProbes is how many of a find's MaxProbesPerFind dials may start
// before its gather ends; the rest are kept for rank, which gives trusted
// records theirs first.
const maxEarlyProbes = MaxProbesPerFind / 2

// earlyProbes are the endpoint probes a find starts while its gather is
// still running: each valid record's endpoints are dialled as soon as the
// first answer that holds it is verified, so that by the time the storers
// agree, the probes that rank needs have mostly answered. On a network
// where a round trip is long, this takes a round trip off a cold find
// (the bootstrap peer, the first peer a fresh node asks, often holds the
// set, an answer or more before agreement; see docs/performance.md).
//
// Only dials that need no check first are made early: TCP endpoints that
// do not name this machine, of records that are not withdrawn, not
// remembered as unreachable, and, when the find pins publishers, delegated
// by one of them. rank reuses an early probe of the same endpoint and
// guard (taking its result, waiting for it if it is still running) and
// dials the rest; an early probe of a record that the merge drops is not
// reported. Safe for concurrent use; its zero value makes no probe.
type earlyProbes struct {
	n      *Node
	ctx    context.Context // the probes': the find's, cancelled by close
	cancel context.CancelFunc
	pins   []ed25519.PublicKey

	mu      sync.Mutex
	targets map[string]*probeTarget // by targetKey
	local   map[peer.ID]bool        // n.localPeers(), on the first record
	closed  bool
}

// startEarly returns the early probes of a find under ctx that pins pins.
func (n *Node) startEarly(ctx context.Context, pins []ed25519.PublicKey) *earlyProbes {
	ctx, cancel := context.WithCancel(ctx)
	return &earlyProbes{n: n, ctx: ctx, cancel: cancel, pins: pins, targets: map[string]*probeTarget{}}
}

// targetKey is how probes of one find are shared: one dial per endpoint
// and guard.
func targetKey(e Endpoint, guard bool) string {
	return fmt.Sprintf("%s|%t", e, guard)
}

// saw starts the probes of r's endpoints that may start early.
func (e *earlyProbes) saw(r *record.Record) {
	if e == nil || e.n == nil || r.Withdrawn {
		return
	}
	if len(e.pins) > 0 && !delegatedBy(r, e.pins) {
		return
	}
	n := e.n
	now := n.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if e.local == nil {
		e.local = n.localPeers()
	}
	guard := !(e.local[r.Peer] || n.cfg.SameMachine)
	for _, s := range r.Endpoints {
		if len(e.targets) >= maxEarlyProbes {
			return
		}
		ep, err := ParseEndpoint(s)
		if err != nil || ep.Network != "tcp" || loopbackHost(ep.Address) {
			continue
		}
		if _, ok := n.probes.remembered(memKey(r, s), now); ok {
			continue
		}
		tk := targetKey(ep, guard)
		if e.targets[tk] != nil {
			continue
		}
		t := newProbeTarget(ep, guard)
		e.targets[tk] = t
		go t.run(e.ctx, &n.probes, n.probes.probeTimeout())
	}
}

// take returns the early probe of tk, started or done, or nil.
func (e *earlyProbes) take(tk string) *probeTarget {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.targets[tk]
}

// started returns how many early probes were started.
func (e *earlyProbes) started() int {
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.targets)
}

// stop starts no more probes: the gather has ended (a GET still out may
// bring a record later).
func (e *earlyProbes) stop() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
}

// close stops e and cancels the probes still running (rank has waited for
// the ones it uses).
func (e *earlyProbes) close() {
	if e == nil || e.cancel == nil {
		return
	}
	e.stop()
	e.cancel()
}

// newProbeTarget returns a probe of ep not yet run.
func newProbeTarget(ep Endpoint, guard bool) *probeTarget {
	return &probeTarget{ep: ep, guard: guard, done: make(chan struct{})}
}

// run dials t's endpoint once under ctx, within timeout from now, sets
// t's result and closes t.done. A dial cut off by ctx itself (the find
// ended) reports ctx's error, so that it is not remembered as a failure.
func (t *probeTarget) run(ctx context.Context, p *prober, timeout time.Duration) {
	defer close(t.done)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sem := p.slots()
	select {
	case sem <- struct{}{}:
	case <-dctx.Done():
		t.err, t.busy = fmt.Errorf("skipped: %d probes in flight on this node", MaxProbesInFlight), true
		return
	}
	defer func() { <-sem }()
	start := time.Now()
	c, err := p.dialer(dctx, t.ep.Network, t.ep.checkAddr(), t.guard)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			err, t.cut = ctx.Err(), true
		case dctx.Err() != nil:
			err = fmt.Errorf("no answer within %v", timeout)
		}
		t.err = err
		return
	}
	t.rtt = time.Since(start)
	c.Close()
}

// remembers reports whether t's failure is one to remember against its
// endpoint: a dial that was made and failed, not one refused by the
// loopback guard, cut off by the find's end, or never made.
func (t *probeTarget) remembers() bool {
	return t.err != nil && !t.busy && !t.cut && !errors.Is(t.err, errLoopbackRefused)
}
