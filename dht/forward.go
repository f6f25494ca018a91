package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Forwarded first PUTs. A node that has just joined knows only the peers
// it bootstrapped from, so its first publish of a name waits for a lookup
// (a FIND_NODE to them), then for a handshake with each storer it names,
// before its PUTs leave: on a 40 ms network the record reached its storers
// 4.75 to 5.1 round trips after the process started, against 1.9 for the
// bootstrap connection (docs/performance.md, session 12). So the first
// publish of a set by a young node (its routing table holds fewer peers
// than a record's storers; no peer took a record of the set from it in
// the last lookupTTL) also sends the record, marked Forward, to the
// forwardVia peers closest to the key that it is already connected to,
// and each of those stores it at the Replication peers closest to the key
// among those it is connected to itself, over connections that are
// already up: by design about a round trip after the bootstrap instead of
// three (not traced at the storers; the end-to-end gain, start to
// findable, is in docs/performance.md, session 13). The publish's own lookup and PUTs go on as before; a forward only
// gets there first. The forwarder's answer names the peers it
// forwards to, and the publish counts them among its holders, so that the
// instance's withdrawal reaches them too.
//
// What keeps a forward from multiplying load (one PUT becomes up to
// Replication PUTs): a peer forwards only a live record whose signer is
// the peer that sent it, only one record per sender and set per
// forwardEvery, at most forwardRate records a second from all senders
// together, never to a peer it is not connected to, and a forwarded PUT
// is not marked Forward (no chains). A forwarder need not be among the
// key's closest peers; it stores the record only if it is, as for any
// PUT.

const (
	// forwardVia is how many connected peers a young node's first
	// publish of a set asks to forward its record.
	forwardVia = 2
	// forwardEvery is how often one sender may have a record forwarded.
	forwardEvery = time.Minute
	// forwardRate and forwardBurst bound the records a node forwards
	// for all senders together.
	forwardRate  = 10
	forwardBurst = 20
)

// forwarding is a node's state as a forwarder.
type forwarding struct {
	mu   sync.Mutex
	last map[string]time.Time // the last forward per sender and set
	all  *rate.Limiter
}

func newForwarding() *forwarding {
	return &forwarding{last: map[string]time.Time{}, all: rate.NewLimiter(forwardRate, forwardBurst)}
}

// allow reports whether a record of set (a store bucket) from sender may
// be forwarded now, and if so records that it was. The map holds at most
// forwardRate × forwardEvery entries (600).
func (f *forwarding) allow(sender peer.ID, set string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := string(sender) + " " + set
	if t, ok := f.last[k]; ok && now.Sub(t) < forwardEvery {
		return false
	}
	if !f.all.AllowN(now, 1) {
		return false
	}
	f.last[k] = now
	return true
}

// gc forgets forwards older than forwardEvery.
func (f *forwarding) gc(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, t := range f.last {
		if now.Sub(t) >= forwardEvery {
			delete(f.last, k)
		}
	}
}

// young reports whether sp's routing table holds fewer peers than a
// record's storers: a node that has just joined (or a small network),
// whose publish will have to dial most of the storers it looks up.
func (d *Node) young(sp *space) bool {
	return sp.kad.RoutingTable().Size() < d.cfg.Replication
}

// connectedClosest returns up to n peers of the routing tables of spaces
// that this node is connected to, closest to key first, without except.
func (d *Node) connectedClosest(spaces []*space, key string, n int, except peer.ID) []peer.ID {
	var peers []peer.ID
	seen := map[peer.ID]bool{except: true}
	for _, sp := range spaces {
		for _, p := range sp.kad.RoutingTable().ListPeers() {
			if !seen[p] && d.host.Network().Connectedness(p) == network.Connected {
				seen[p] = true
				peers = append(peers, p)
			}
		}
	}
	peers = kb.SortClosestPeers(peers, kb.ConvertKey(key))
	return peers[:min(n, len(peers))]
}

// askForward sends req (a PUT) marked Forward to the forwardVia peers of
// sp closest to key that this node is connected to, in wg, and hands the
// peers they say they forward it to (at most Replication from each) to
// forwarding, for the publish's holders: a withdrawal must reach them. A
// forwarder that stored the record itself (it answered without an error:
// it is among the key's closest by its own table, which the publish's
// lookup need not return) is handed to forwarding too, first, with stored
// true: a remote peer took the record. Its refusal to store counts for
// nothing (a forwarder is seldom a storer).
func (d *Node) askForward(ctx context.Context, wg *sync.WaitGroup, sp *space, key string, req request, forwarding func(stored bool, to []peer.ID)) {
	req.Forward = true
	for _, p := range d.connectedClosest([]*space{sp}, key, forwardVia, "") {
		d.count.add("forward_asked", 1)
		wg.Go(func() {
			resp, err := d.call(ctx, p, req)
			if resp == nil {
				return
			}
			var to []peer.ID
			if err == nil {
				to = append(to, p)
			}
			for _, b := range resp.Forwarding[:min(len(resp.Forwarding), d.cfg.Replication)] {
				if id, err := peer.IDFromBytes(b); err == nil && id != d.host.ID() {
					to = append(to, id)
				}
			}
			forwarding(err == nil, to)
		})
	}
}

// maybeForward forwards a PUT marked Forward from sender if the rules
// above let it, and returns the peers it forwards to: it returns at once,
// the PUTs go on in the background.
func (d *Node) maybeForward(sender peer.ID, req request) []peer.ID {
	if !d.Server() {
		return nil
	}
	r, err := record.VerifyIn(req.Record, req.Name, int(req.Shard), d.cfg.Store.Now())
	switch {
	case err != nil, r.Withdrawn, r.Peer != sender,
		req.Publisher != nil && !bytes.Equal(r.Publisher(), req.Publisher):
		d.count.add("forward_refused", 1)
		return nil
	case !d.fwd.allow(sender, bucket(req.Name, req.Publisher, int(req.Shard)), time.Now()):
		d.count.add("forward_limited", 1)
		return nil
	}
	select {
	case <-d.done:
		return nil
	default:
	}
	to := d.connectedClosest(d.spaces, setKey(req.Name, ed25519.PublicKey(req.Publisher)), d.cfg.Replication, sender)
	req.Forward = false
	d.count.add("forwarded", 1)
	go func() { // as the path cache's PUTs: they end when the node closes
		ctx, cancel := d.background(context.Background(), d.cfg.RequestTimeout)
		defer cancel()
		var wg sync.WaitGroup
		for _, p := range to {
			d.count.add("forward_sent", 1)
			d.count.add("put_sent", 1)
			wg.Go(func() { _, _ = d.call(ctx, p, req) })
		}
		wg.Wait()
	}()
	return to
}
