package dht

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Handing sets to newcomers. A peer that enters a routing table closer to
// a key than the storers of its set holds nothing of the set until each
// publisher's next republish notices it (20 s, or storersTTL when the
// publisher's own table has not heard of it), and finds that ask it
// meanwhile see part of the set or none: their answers cannot agree (see
// gather.tally) and every find waits for its whole lookup. On a young
// network (the nodes of a deployment starting together, each publishing
// when it knew a handful of peers) that was every find of the first
// republish interval: on loopback, 7 nodes three seconds after their
// start, each storer held 1 to 6 of the 6 instances and no cold find
// ended early. So, as in Kademlia (Maymounkov and Mazières, section 2.5),
// a node that learns of a newcomer stores at it the sets it holds of
// which the newcomer is now among the Replication closest peers it knows.
//
// A newcomer is a peer identified as a DHT server of a space this node
// serves that kad-dht then adds to that space's routing table (one that
// was dropped, and comes back, is a newcomer again; one already in the
// table that reconnects is not). The handoffSenders storers of a set
// closest to its key hand it, and a node hands one newcomer at most
// handoffMax records (smallest sets first): what a large set lacks, its
// publishers' republishes bring.

const (
	// handoffDelay is how long after a peer's identification the
	// handoff looks for it in the routing tables: kad-dht adds it on
	// the same event, in a goroutine of its own.
	handoffDelay = 100 * time.Millisecond
	// handoffTries is how many times a peer identified as a DHT server
	// is looked for in the tables before it is let go (a table that is
	// full takes no one).
	handoffTries = 3
	// handoffSenders is how many of the storers of a set closest to its
	// key hand it to a newcomer: not every storer, so that a newcomer is
	// not sent each set by all of its up to Replication storers (on the
	// loopback benchmark's 17 nodes, where every node stores every set,
	// every one of them sent each new sidecar every set as it started:
	// start to findable p50 120 ms against 98 without the handoff); more
	// than one, so that sets that some storers hold in part (a young
	// network) reach it whole.
	handoffSenders = 3
	// handedTTL is how long a newcomer is remembered as handed its sets.
	// A peer that reconnects while in the table is not handed them
	// again; one the table dropped and took back is (its AddedAt is
	// newer), however soon.
	handedTTL = 10 * time.Minute
)

// handoffMax is the most records a node hands one newcomer at a time: two
// seconds of the newcomer's per-peer rate (PeerRate), well within the
// burst it lets a peer make.
func (d *Node) handoffMax() int { return max(1, int(2*d.cfg.PeerRate)) }

// heldSet is one set of the store: what handoff hands on.
type heldSet struct {
	key   string // the store's name for it (bucket)
	name  string
	pub   ed25519.PublicKey // nil: the name's own set
	shard int
	raws  [][]byte // its live records, withdrawals included
}

// unbucket is the inverse of bucket. Names cannot hold '@' or '#'
// (record.ParseName), so the split is unambiguous.
func unbucket(b string) (name string, pub ed25519.PublicKey, shard int, err error) {
	rest := b
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		if shard, err = strconv.Atoi(rest[i+1:]); err != nil || shard <= 0 {
			return "", nil, 0, errors.New("dht: bad shard in set " + strconv.Quote(b))
		}
		rest = rest[:i]
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		raw, err := hex.DecodeString(rest[i+1:])
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return "", nil, 0, errors.New("dht: bad publisher in set " + strconv.Quote(b))
		}
		pub, rest = raw, rest[:i]
	}
	return rest, pub, shard, nil
}

// sets returns the sets held, each with its live records, smallest first.
func (s *Store) sets() []heldSet {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []heldSet
	for b, set := range s.byName {
		name, pub, shard, err := unbucket(b)
		if err != nil {
			continue
		}
		h := heldSet{key: b, name: name, pub: pub, shard: shard}
		for _, r := range set {
			if r.Check(now) == nil {
				h.raws = append(h.raws, r.Bytes())
			}
		}
		if len(h.raws) > 0 {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i].raws) != len(out[j].raws) {
			return len(out[i].raws) < len(out[j].raws)
		}
		return out[i].key < out[j].key
	})
	return out
}

// handoffLoop watches for newcomers (see above) until the node closes.
func (d *Node) handoffLoop(sub event.Subscription) {
	defer d.wg.Done()
	defer sub.Close()
	pending := map[peer.ID]int{} // identified DHT servers, with the times looked for
	handed := map[*space]map[peer.ID]time.Time{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	for {
		select {
		case <-d.done:
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev, ok := e.(event.EvtPeerIdentificationCompleted)
			if !ok || !d.speaksKad(ev.Protocols) {
				continue
			}
			if _, ok := pending[ev.Peer]; !ok {
				pending[ev.Peer] = 0
			}
			if !armed {
				timer.Reset(handoffDelay)
				armed = true
			}
		case <-timer.C:
			armed = false
			d.handOff(d.newcomers(pending, handed))
			if len(pending) > 0 {
				timer.Reset(handoffDelay)
				armed = true
			}
		}
	}
}

// speaksKad reports whether protos holds the kad protocol of one of the
// node's spaces: the peer is a DHT server there.
func (d *Node) speaksKad(protos []protocol.ID) bool {
	for _, sp := range d.spaces {
		if slices.Contains(protos, sp.proto) {
			return true
		}
	}
	return false
}

// newcomer is a peer to hand sets to, in one space.
type newcomer struct {
	sp *space
	p  peer.ID
}

// newcomers takes from pending the peers that the routing tables of the
// spaces this node serves took in since they were last handed their sets
// (handed, per space), and returns them. A pending peer in no table yet
// stays pending, handoffTries times at most.
func (d *Node) newcomers(pending map[peer.ID]int, handed map[*space]map[peer.ID]time.Time) []newcomer {
	now := time.Now()
	var out []newcomer
	found := map[peer.ID]bool{}
	for _, sp := range d.spaces {
		if !d.serving(sp) {
			continue
		}
		h := handed[sp]
		if h == nil {
			h = map[peer.ID]time.Time{}
			handed[sp] = h
		}
		for _, pi := range sp.kad.RoutingTable().GetPeerInfos() {
			if _, ok := pending[pi.Id]; !ok {
				continue
			}
			found[pi.Id] = true
			if last, ok := h[pi.Id]; ok && !pi.AddedAt.After(last) {
				continue // in the table since it was handed its sets
			}
			h[pi.Id] = now
			out = append(out, newcomer{sp, pi.Id})
		}
		for p, t := range h {
			if now.Sub(t) > handedTTL {
				delete(h, p)
			}
		}
	}
	for p, tries := range pending {
		if found[p] || tries+1 >= handoffTries {
			delete(pending, p)
		} else {
			pending[p] = tries + 1
		}
	}
	return out
}

// handOff stores at each newcomer, in the background, the sets it is now
// among the Replication closest peers of, where this node is one too: at
// most handoffMax records per newcomer, smallest sets first.
func (d *Node) handOff(ncs []newcomer) {
	if len(ncs) == 0 {
		return
	}
	held := d.store.sets()
	if len(held) == 0 {
		return
	}
	self := d.host.ID()
	for _, nc := range ncs {
		rt := nc.sp.kad.RoutingTable()
		var reqs []request
		for _, h := range held {
			k := kb.ConvertKey(setKey(h.name, h.pub))
			if !d.bothAmong(rt, k, nc.p, self) || !amongSenders(rt, k, nc.p, self) {
				continue
			}
			for _, raw := range h.raws {
				reqs = append(reqs, request{Op: opPut, Name: h.name, Publisher: h.pub, Shard: uint64(h.shard), Record: raw})
			}
		}
		if len(reqs) == 0 {
			continue
		}
		if len(reqs) > d.handoffMax() {
			reqs = reqs[:d.handoffMax()]
			d.count.add("handoff_capped", 1)
		}
		d.count.add("handoff_peers", 1)
		d.wg.Add(1)
		go d.hand(nc.p, reqs)
	}
}

// bothAmong reports whether p and self are both among the Replication
// closest peers to k of rt's peers and self.
func (d *Node) bothAmong(rt *kb.RoutingTable, k kb.ID, p, self peer.ID) bool {
	near := rt.NearestPeers(k, d.cfg.Replication)
	i := slices.Index(near, p)
	if i < 0 {
		return false
	}
	ks := kb.ConvertPeerID(self)
	ahead := 0 // peers closer than self
	for _, q := range near {
		if closer(k, kb.ConvertPeerID(q), ks) {
			ahead++
		}
	}
	if ahead > i { // self is closer than p: p is one place farther
		i++
	}
	return i < d.cfg.Replication && ahead < d.cfg.Replication
}

// amongSenders reports whether self is among the handoffSenders peers
// closest to k of rt's peers and self, the newcomer p left out: the
// storers that hand p a set.
func amongSenders(rt *kb.RoutingTable, k kb.ID, p, self peer.ID) bool {
	ks := kb.ConvertPeerID(self)
	ahead := 0
	for _, q := range rt.NearestPeers(k, handoffSenders+1) {
		if q != p && closer(k, kb.ConvertPeerID(q), ks) {
			ahead++
		}
	}
	return ahead < handoffSenders
}

// hand sends reqs to p, a few at a time, until one fails for another
// reason than the record itself (p is gone, or refuses the set's key).
func (d *Node) hand(p peer.ID, reqs []request) {
	defer d.wg.Done()
	ctx, cancel := d.background(context.Background(), d.cfg.RequestTimeout)
	defer cancel()
	const inFlight = 4
	var mu sync.Mutex
	stop := false
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	for _, req := range reqs {
		mu.Lock()
		halt := stop
		mu.Unlock()
		if halt {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d.count.add("handoff_sent", 1)
			d.count.add("put_sent", 1)
			_, err := d.call(ctx, p, req)
			var remote *RemoteError
			switch {
			case err == nil:
				d.count.add("handoff_stored", 1)
			case errors.As(err, &remote):
				d.count.add("handoff_refused", 1) // stale, full, or not among the closest by its table
			default:
				mu.Lock()
				stop = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// background returns a context for requests the node sends on its own
// (handoffs, path caching, departure checks): it ends after budget, or
// when the node closes.
func (d *Node) background(parent context.Context, budget time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, budget)
	go func() {
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
