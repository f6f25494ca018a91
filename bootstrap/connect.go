package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// DefaultDialTimeout bounds one peer's dial in Connect when its timeout is
// zero.
const DefaultDialTimeout = 5 * time.Second

// maxListedFailures bounds the peers named in Connect's error message; all of
// them remain reachable through errors.Is and errors.As.
const maxListedFailures = 8

var errSelf = errors.New("is this host")

// MaxFallbackDials is how many fallback peers Connect dials beside the
// primary ones.
const MaxFallbackDials = 8

// connectGrace is how long Connect waits, after the first peer connected,
// for dials that are about to succeed too (a fraction of the time the first
// took, at most this).
const connectGrace = 50 * time.Millisecond

// Connect dials the primary peers and up to MaxFallbackDials fallback peers
// (typically the peers of a Store, peers seen before) all at once, each
// bounded by timeout (zero or negative means DefaultDialTimeout) and by
// ctx, and returns as soon as one connects, with the IDs connected by then
// (after a short grace for near-simultaneous dials), primary peers first,
// in input order. No peer waits on another: a bootstrap peer that is down
// costs nothing when a peer seen before answers, and the dials still under
// way go on in the background (bounded by timeout and ctx), so they can
// still fill the routing table. Peers listed twice are dialled once with
// their addresses merged; the host's own ID is never dialled.
//
// If nothing connects, the error wraps ErrNoPeers and every peer's failure
// (and ctx.Err() if ctx ended); its message names each peer with a short
// reason, such as "timed out" or "connection refused".
func Connect(ctx context.Context, h host.Host, primary, fallback []peer.AddrInfo, timeout time.Duration) ([]peer.ID, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	var peers []peer.AddrInfo
	for _, p := range primary {
		peers = addAddrs(peers, p)
	}
	nPrimary := len(peers)
	for _, p := range fallback {
		if len(peers)-nPrimary == MaxFallbackDials {
			break
		}
		peers = addAddrs(peers, p)
	}
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: no bootstrap peers given", ErrNoPeers)
	}
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(peers)) // buffered: dials finish after Connect returns
	start := time.Now()
	for i, p := range peers {
		if p.ID == h.ID() {
			results <- result{i, &peerError{ID: p.ID, Err: errSelf}}
			continue
		}
		go func() {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			err := dial(dctx, h, p)
			if sw, ok := h.Network().(*swarm.Swarm); ok && errors.Is(err, swarm.ErrDialBackoff) {
				// Another dial of p (kad-dht's own, say) failed just
				// before: dial again, so that the error says why.
				sw.Backoff().Clear(p.ID)
				err = dial(dctx, h, p)
			}
			if err != nil {
				err = &peerError{ID: p.ID, Err: err}
			}
			results <- result{i, err}
		}()
	}
	ok := make([]bool, len(peers))
	errs := make([]error, len(peers))
	var grace <-chan time.Time
	for range peers {
		var r result
		select {
		case r = <-results:
		case <-grace:
			return connected(peers, ok), nil
		}
		if r.err != nil {
			errs[r.i] = r.err
			continue
		}
		ok[r.i] = true
		if grace == nil {
			grace = time.After(min(connectGrace, time.Since(start)/2))
		}
	}
	if ids := connected(peers, ok); len(ids) > 0 {
		return ids, nil
	}
	var failed dialErrors
	if err := ctx.Err(); err != nil {
		failed = append(failed, err)
	}
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrNoPeers, failed)
}

// dial connects h to p, as the host's Connect does but without waiting
// for identify on the new connection: identify is a round trip of its own
// after the handshake (the peer answers our identify request once its
// side of the handshake is done), and a node that has just dialled its
// bootstrap peers need not wait for it to send its first requests (see
// dht.Node.Seed, which takes them into the routing tables before identify
// has said what they speak). Identify still runs, in the background.
func dial(ctx context.Context, h host.Host, p peer.AddrInfo) error {
	if h.Network().Connectedness(p.ID) == network.Connected {
		return nil
	}
	h.Peerstore().AddAddrs(p.ID, p.Addrs, peerstore.TempAddrTTL)
	_, err := h.Network().DialPeer(ctx, p.ID)
	return err
}

// connected returns the IDs of peers whose dial succeeded, in order.
func connected(peers []peer.AddrInfo, ok []bool) []peer.ID {
	var ids []peer.ID
	for i, p := range peers {
		if ok[i] {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// peerError is the failure to connect to one peer.
type peerError struct {
	ID  peer.ID
	Err error
}

func (e *peerError) Error() string { return e.ID.String() + ": " + reason(e.Err) }
func (e *peerError) Unwrap() error { return e.Err }

// reason condenses a dial error (swarm errors span several lines, one per
// address) into a short phrase.
func reason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, swarm.ErrDialBackoff):
		return "dial backoff (failed recently)"
	}
	msg := err.Error()
	var de *swarm.DialError
	if errors.As(err, &de) {
		switch {
		case len(de.DialErrors) > 0:
			msg = de.DialErrors[0].Cause.Error()
			if n := len(de.DialErrors) + de.Skipped - 1; n > 0 {
				msg += fmt.Sprintf(" (and %d more addresses)", n)
			}
		case de.Cause != nil:
			msg = de.Cause.Error()
		}
	}
	return strings.Join(strings.Fields(msg), " ")
}

// dialErrors lists failures on one line, naming at most maxListedFailures.
type dialErrors []error

func (e dialErrors) Error() string {
	msgs := make([]string, 0, min(len(e), maxListedFailures)+1)
	for _, err := range e[:min(len(e), maxListedFailures)] {
		msgs = append(msgs, err.Error())
	}
	if n := len(e) - maxListedFailures; n > 0 {
		msgs = append(msgs, fmt.Sprintf("and %d more", n))
	}
	return strings.Join(msgs, "; ")
}

func (e dialErrors) Unwrap() []error { return e }
