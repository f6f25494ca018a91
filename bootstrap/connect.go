package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

// DefaultDialTimeout bounds one peer's dial in Connect when its timeout is
// zero.
const DefaultDialTimeout = 5 * time.Second

// maxListedFailures bounds the peers named in Connect's error message; all of
// them remain reachable through errors.Is and errors.As.
const maxListedFailures = 8

var errSelf = errors.New("is this host")

// Connect dials the primary peers in parallel, each bounded by timeout (zero
// or negative means DefaultDialTimeout) and by ctx, and returns the IDs it is
// connected to, in input order. If none of primary connects (or primary is
// empty), it dials fallback, typically the peers of a Store, the same way.
// Peers listed twice are dialled once with their addresses merged; the host's
// own ID is never dialled. It returns when every dial of the set in use has
// finished.
//
// If nothing connects, the error wraps ErrNoPeers and every peer's failure
// (and ctx.Err() if ctx ended); its message names each peer with a short
// reason, such as "timed out" or "connection refused".
func Connect(ctx context.Context, h host.Host, primary, fallback []peer.AddrInfo, timeout time.Duration) ([]peer.ID, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	var failed dialErrors
	for _, set := range [][]peer.AddrInfo{primary, fallback} {
		if len(set) == 0 {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		ok, errs := dialAll(ctx, h, set, timeout)
		if len(ok) > 0 {
			return ok, nil
		}
		failed = append(failed, errs...)
	}
	if err := ctx.Err(); err != nil {
		failed = append(dialErrors{err}, failed...)
	}
	if len(failed) == 0 {
		return nil, fmt.Errorf("%w: no bootstrap peers given", ErrNoPeers)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoPeers, failed)
}

// dialAll connects h to every peer in set in parallel and returns the
// connected IDs in input order and one error per peer that failed.
func dialAll(ctx context.Context, h host.Host, set []peer.AddrInfo, timeout time.Duration) ([]peer.ID, []error) {
	var peers []peer.AddrInfo
	for _, p := range set {
		peers = addAddrs(peers, p)
	}
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		if p.ID == h.ID() {
			errs[i] = &peerError{ID: p.ID, Err: errSelf}
			continue
		}
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := h.Connect(dctx, p); err != nil {
				errs[i] = &peerError{ID: p.ID, Err: err}
			}
		})
	}
	wg.Wait()
	var ok []peer.ID
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, err)
		} else {
			ok = append(ok, peers[i].ID)
		}
	}
	return ok, failed
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
