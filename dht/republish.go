package dht

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// Republishing without lookups. A publish remembers the storers that took
// its record (space.storers, for lookupTTL after the lookup that found
// them). A republish sends the new record to them alone. Every ReuseFor
// (storersTTL, 2 min, by default), or when the routing table knows a peer
// closer than one of them, or when one of them refuses or is gone, it
// first asks the two closest of them for their closest peers to the key
// (one kad FIND_NODE each: a storer's routing table knows the key's
// neighbourhood better than anyone's) and stores at the Replication
// closest of all it knows, replacing the gone and taking in the
// newcomers. Only when that fails, or lookupTTL after the last lookup,
// does a publish look up afresh. At 1000 nodes a lookup costs about 36
// FIND_NODE and a publish through it 60 messages; a republish costs the
// Replication PUTs and, every ReuseFor, two FIND_NODE more.

// lookupTTL is how long a storer set found by a lookup is kept up by
// asking its members, before a publish looks up afresh.
const lookupTTL = 10 * time.Minute

// askStorers is how many remembered storers a republish asks for their
// closest peers.
const askStorers = 2

// repairRounds is how many times a republish replaces failed storers
// before it gives up and looks up.
const repairRounds = 3

// reuse sends r (through store, which records who took it; wait waits for
// the stores and returns the peers that took r) to the remembered storers
// prev of key, checking the set first when it is due (see above). It
// returns the storer set that took r, or ok false when the set could not
// be kept up: the caller then looks up.
func (d *Node) reuse(ctx context.Context, sp *space, key string, prev []peer.ID, store func(peer.ID), wait func() []peer.ID) (set []peer.ID, ok bool) {
	k := kb.ConvertKey(key)
	now := time.Now()
	closerT := d.closerPeers(sp, key, prev)
	set = prev
	asked := false
	var more []peer.ID
	if sp.checked.get(key, now) == nil || len(closerT) > 0 {
		var n int
		more, n = d.askClosest(ctx, sp, key, prev)
		if n == 0 {
			return nil, false
		}
		asked = true
		d.count.add("publish_refreshed", 1)
		set = d.diverse(k, d.cfg.Replication, slices.Concat(prev, closerT, more), nil)
	}
	for _, p := range set {
		store(p)
	}
	took := wait()
	failed := map[peer.ID]bool{}
	for round := 0; missing(set, took) > 0; round++ {
		// A storer refused or is gone: ask those that took it (once,
		// unless just done) and store at the closest of what is left;
		// a peer they name may be gone too, hence a few rounds.
		if round == repairRounds {
			return nil, false
		}
		d.count.add("publish_repaired", 1)
		for _, p := range set {
			if !slices.Contains(took, p) {
				failed[p] = true
			}
		}
		if !asked {
			var n int
			if more, n = d.askClosest(ctx, sp, key, took); n == 0 {
				return nil, false
			}
			asked = true
		}
		var cands []peer.ID
		for _, p := range slices.Concat(took, set, closerT, more) {
			if !failed[p] {
				cands = append(cands, p)
			}
		}
		set = d.diverse(k, d.cfg.Replication, cands, nil)
		if len(set) < minReuse {
			return nil, false
		}
		for _, p := range set {
			store(p)
		}
		took = wait()
	}
	if asked {
		sp.checked.put(key, set, now)
	}
	sp.storers.replace(key, set)
	sp.holders.put(key, union(sp.holders.get(key, now), took), now)
	return set, true
}

// missing counts the peers of set that are not in took.
func missing(set, took []peer.ID) int {
	n := 0
	for _, p := range set {
		if !slices.Contains(took, p) {
			n++
		}
	}
	return n
}

func union(a, b []peer.ID) []peer.ID {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// closerPeers returns the peers of sp's routing table closer to key than
// the farthest of storers that are not among them: peers that joined, or
// that a healed partition brought back, and should hold the set.
func (d *Node) closerPeers(sp *space, key string, storers []peer.ID) []peer.ID {
	k := kb.ConvertKey(key)
	far := kb.ConvertPeerID(storers[0])
	for _, p := range storers[1:] {
		if id := kb.ConvertPeerID(p); closer(k, far, id) {
			far = id
		}
	}
	var out []peer.ID
	for _, p := range sp.kad.RoutingTable().NearestPeers(k, d.cfg.Replication) {
		if !slices.Contains(storers, p) && closer(k, kb.ConvertPeerID(p), far) {
			out = append(out, p)
		}
	}
	return out
}

// askClosest asks the askStorers peers of storers closest to key for their
// closest peers to it (a kad FIND_NODE each, in parallel), and returns the
// peers they named and how many answered. The peers' addresses go to the
// peerstore for a short while, as a lookup's do.
func (d *Node) askClosest(ctx context.Context, sp *space, key string, storers []peer.ID) ([]peer.ID, int) {
	k := kb.ConvertKey(key)
	ask := slices.Clone(storers)
	sort.SliceStable(ask, func(i, j int) bool { return closer(k, kb.ConvertPeerID(ask[i]), kb.ConvertPeerID(ask[j])) })
	ask = ask[:min(askStorers, len(ask))]
	pm, err := pb.NewProtocolMessenger(sp.kad.MessageSender())
	if err != nil {
		return nil, 0
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []peer.ID
	answered := 0
	for _, p := range ask {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
			defer cancel()
			ais, err := pm.GetClosestPeers(cctx, p, peer.ID(key))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answered++
			for _, ai := range ais {
				if ai.ID == d.host.ID() || slices.Contains(out, ai.ID) {
					continue
				}
				if len(ai.Addrs) > 0 {
					d.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
				}
				out = append(out, ai.ID)
			}
		})
	}
	wg.Wait()
	return out, answered
}

// replace sets the peers of key's entry, keeping its time (so that the
// entry still ends when it would have); it does nothing if key has none.
func (c *closestCache) replace(key string, peers []peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		e.peers = peers
		c.m[key] = e
	}
}
