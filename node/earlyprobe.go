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
// Early dials go to the TCP endpoints of records that are not withdrawn,
// not remembered as unreachable, and, when the find pins publishers,
// delegated by one of them. A record that lists a loopback endpoint first
// has its peer shown to run on this machine, as rank would show it
// (onThisMachine: a connection over loopback, made now if there is none),
// also while the gather runs, once this node is connected to the peer or
// knows a loopback address of it; its endpoints are dialled once that
// check is done, with the guard its verdict gives (the loopback ones only
// if it holds). rank takes an early check of the same peer and an early
// probe of the same endpoint and guard (waiting for them if they are
// still running) and makes the rest itself; an early probe of a record
// that the merge drops is not reported. Safe for concurrent use; its zero
// value makes no probe.
type earlyProbes struct {
	n      *Node
	ctx    context.Context // the probes': the find's, cancelled by close
	cancel context.CancelFunc
	pins   []ed25519.PublicKey

	mu      sync.Mutex
	targets map[string]*probeTarget   // by targetKey
	machine map[peer.ID]*machineCheck // early checks that a peer runs on this machine
	local   map[peer.ID]bool          // n.localPeers(), on the first record
	closed  bool
}

// machineCheck is an early onThisMachine of one peer. Its result is set
// before done is closed; recs, the records of the peer waiting for it, is
// e.mu's.
type machineCheck struct {
	done        chan struct{}
	ok, dialled bool
	why         string
	finished    bool             // under e.mu: the result is in
	recs        []*record.Record // under e.mu: their endpoints are probed when the result is in
}

// startEarly returns the early probes of a find under ctx that pins pins.
func (n *Node) startEarly(ctx context.Context, pins []ed25519.PublicKey) *earlyProbes {
	ctx, cancel := context.WithCancel(ctx)
	return &earlyProbes{n: n, ctx: ctx, cancel: cancel, pins: pins, targets: map[string]*probeTarget{}, machine: map[peer.ID]*machineCheck{}}
}

// targetKey is how probes of one find are shared: one dial per endpoint
// and guard.
func targetKey(e Endpoint, guard bool) string {
	return fmt.Sprintf("%s|%t", e, guard)
}

// saw starts the probes of r's endpoints that may start early, or the
// check of r's peer that they wait for.
func (e *earlyProbes) saw(r *record.Record) {
	if e == nil || e.n == nil || r.Withdrawn {
		return
	}
	if len(e.pins) > 0 && !delegatedBy(r, e.pins) {
		return
	}
	n := e.n
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if e.local == nil {
		e.local = n.localPeers()
	}
	if e.local[r.Peer] || n.cfg.SameMachine {
		e.probeLocked(r, false)
		return
	}
	if !listsLoopback(r) {
		e.probeLocked(r, true)
		return
	}
	if c := e.machine[r.Peer]; c != nil {
		if c.finished {
			e.probeLocked(r, !c.ok)
		} else {
			c.recs = append(c.recs, r)
		}
		return
	}
	if e.dialsLocked() >= maxEarlyProbes {
		return
	}
	if _, ok := n.probes.remembered(machineKey(r), n.now()); ok {
		return // rank says why
	}
	if len(n.host.Network().ConnsToPeer(r.Peer)) == 0 && len(n.loopbackAddrs(r.Peer)) == 0 {
		// Nothing to check it with yet (a storer's answer can come before
		// the lookup names the peer's addresses): rank checks it.
		return
	}
	c := &machineCheck{done: make(chan struct{}), recs: []*record.Record{r}}
	e.machine[r.Peer] = c
	go e.runCheck(r.Peer, c)
}

// runCheck runs c, the check of peer p, then starts the probes of the
// records waiting for it, unless the find is over, and closes c.done.
func (e *earlyProbes) runCheck(p peer.ID, c *machineCheck) {
	ctx, cancel := context.WithTimeout(e.ctx, e.n.probes.probeTimeout())
	defer cancel()
	ok, why, dialled := e.n.onThisMachine(ctx, p)
	e.mu.Lock()
	c.ok, c.why, c.dialled, c.finished = ok, why, dialled, true
	// Also once the gather has ended (stop): rank waits for this check
	// before it dials, and takes these probes.
	if e.ctx.Err() == nil {
		for _, r := range c.recs {
			e.probeLocked(r, !ok)
		}
	}
	c.recs = nil
	e.mu.Unlock()
	close(c.done) // after the probes started: rank takes them
}

// probeLocked starts the probes of r's TCP endpoints with guard, but of
// loopback ones while guard is on. Called with e.mu held.
func (e *earlyProbes) probeLocked(r *record.Record, guard bool) {
	n := e.n
	now := n.now()
	for _, s := range r.Endpoints {
		if e.dialsLocked() >= maxEarlyProbes {
			return
		}
		ep, err := ParseEndpoint(s)
		if err != nil || ep.Network != "tcp" || (guard && loopbackHost(ep.Address)) {
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

// listsLoopback reports whether r lists a TCP endpoint on loopback: its
// peer must be shown to run on this machine before it is dialled.
func listsLoopback(r *record.Record) bool {
	for _, s := range r.Endpoints {
		if ep, err := ParseEndpoint(s); err == nil && ep.Network == "tcp" && loopbackHost(ep.Address) {
			return true
		}
	}
	return false
}

// machineKey is the key under which a failed check that r's peer runs on
// this machine is remembered.
func machineKey(r *record.Record) string { return "machine/" + memKey(r, "") }

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

// checkOf returns the early check of p, started or done, or nil.
func (e *earlyProbes) checkOf(p peer.ID) *machineCheck {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.machine[p]
}

// dials returns how many early probes and checks were started: each
// counts as a dial of the find's.
func (e *earlyProbes) dials() int {
	if e == nil {
		return 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dialsLocked()
}

func (e *earlyProbes) dialsLocked() int { return len(e.targets) + len(e.machine) }

// stop starts no more probes or checks for records seen from now on: the
// gather has ended (a GET still out may bring a record later). A check
// still running starts its records' probes when it is done.
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
