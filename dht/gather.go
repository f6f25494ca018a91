package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"maps"
	"math/bits"
	"sort"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Find tuning. A set is replicated at the Replication closest peers, so a
// few of them answering with the same records is strong evidence that the
// set is complete; the rest of the lookup would only confirm it.
const (
	// agreeQuorum is how many storers must answer with the same non-empty
	// set before a find stops early.
	agreeQuorum = 3
	// cacheTTL is how long a find remembers the closest peers of a key. A
	// repeated find asks them straight away, without a lookup.
	cacheTTL = time.Minute
	// cachedAsk is how many remembered closest peers a repeated find asks
	// first.
	cachedAsk = agreeQuorum + 2
)

// closestCache remembers the closest peers of recently looked-up keys.
type closestCache struct {
	mu sync.Mutex
	m  map[string]cachedPeers
}

type cachedPeers struct {
	peers []peer.ID
	at    time.Time
}

func (c *closestCache) get(key string, now time.Time) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) > cacheTTL {
		delete(c.m, key)
		return nil
	}
	return e.peers
}

func (c *closestCache) put(key string, peers []peer.ID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedPeers{}
	}
	for k, e := range c.m { // keep it small: drop stale entries as we go
		if now.Sub(e.at) > cacheTTL {
			delete(c.m, k)
		}
	}
	c.m[key] = cachedPeers{peers: peers, at: now}
}

// gatherer collects one set (a name's, or a publisher's for a name) from
// the peers closest to its key. It asks storers while kad-dht's lookup is
// still running, as soon as a peer that answered the lookup ranks among
// the closest seen so far, and stops once agreeQuorum storers agree.
type gatherer struct {
	d    *DHT
	req  request
	key  kb.ID
	ctx  context.Context // cancelled when the gather ends
	t0   time.Time
	now  func() time.Time
	near int           // common prefix length with the key from which an answer counts towards agreement; -1: none does
	done chan struct{} // closed once the answers agree

	mu        sync.Mutex
	wg        sync.WaitGroup
	asked     map[peer.ID]bool
	responded []peer.ID // lookup responders, closest first
	raws      [][]byte
	seen      map[string]bool // raw record → verified valid for this set
	agree     int             // near answers in a row with valid records and nothing new
	answered  int
	first     time.Duration
	closed    bool
	rejected  map[string]int // invalid records received, by Reason
}

// ask sends the GET to p once. trusted says p is known to be among the
// closest peers (from a completed lookup), so its answer counts towards
// agreement wherever it stands.
func (g *gatherer) ask(p peer.ID, trusted bool) {
	g.mu.Lock()
	if g.asked[p] || g.closed {
		g.mu.Unlock()
		return
	}
	g.asked[p] = true
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		g.d.count.add("get_sent", 1)
		resp, err := g.d.call(g.ctx, p, g.req)
		if err != nil {
			return
		}
		counts := trusted || (g.near >= 0 && kb.CommonPrefixLen(kb.ConvertPeerID(p), g.key) >= g.near)
		now := g.now()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.answered++
		valid, fresh := 0, false
		for i, r := range resp.Records {
			if i >= MaxPerNameDefault { // one peer cannot flood a find
				break
			}
			ok, known := g.seen[string(r)]
			if !known {
				ok = g.valid(r, now)
				g.seen[string(r)] = ok
				if ok {
					g.raws = append(g.raws, r)
					fresh = true
				}
			}
			if ok {
				valid++
			}
		}
		if valid == 0 {
			return // junk or nothing: neither agrees nor disagrees
		}
		if g.first == 0 {
			g.first = time.Since(g.t0)
		}
		switch {
		case fresh:
			g.agree = 0
			if counts {
				g.agree = 1
			}
		case counts:
			g.agree++
		}
		if g.agree >= agreeQuorum && !g.closed {
			g.closed = true
			close(g.done)
		}
	}()
}

// valid reports whether raw is a live record of the set asked for.
func (g *gatherer) valid(raw []byte, now time.Time) bool {
	r, err := Verify(raw, g.req.Name, now)
	if err == nil && g.req.Publisher != nil && !bytes.Equal(r.Publisher(), g.req.Publisher) {
		err = ErrWrongPublisher
	}
	if err != nil {
		g.rejected[Reason(err)]++
		return false
	}
	return true
}

// consider asks p, a peer that answered the lookup, if it ranks among the
// Replication closest responders so far.
func (g *gatherer) consider(p peer.ID) {
	g.mu.Lock()
	id := kb.ConvertPeerID(p)
	i := sort.Search(len(g.responded), func(i int) bool {
		return closer(g.key, id, kb.ConvertPeerID(g.responded[i]))
	})
	g.responded = append(g.responded, "")
	copy(g.responded[i+1:], g.responded[i:])
	g.responded[i] = p
	rank := i
	g.mu.Unlock()
	if rank < g.d.cfg.Replication {
		g.ask(p, false)
	}
}

// closer reports whether a is strictly closer to key than b.
func closer(key, a, b kb.ID) bool {
	return bytes.Compare(kb.ID(xor(key, a)), kb.ID(xor(key, b))) < 0
}

func xor(a, b kb.ID) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// gatherStats is what one gather reports into FindStats.
type gatherStats struct {
	closest, asked, answered int
	lookup, first            time.Duration
	early, cached            bool
	lookupErr                error
	rejected                 map[string]int
}

// nearPrefix is the common prefix length with a key from which a peer is
// likely among the Replication closest to it, from kad-dht's estimate of
// the network's size: log2(size/Replication) - 1. It is -1 (no peer is
// near enough to stop a find early) while there is no estimate.
func (d *DHT) nearPrefix() int {
	n, err := d.kad.NetworkSize()
	if err != nil || n <= 0 {
		return -1
	}
	return max(0, bits.Len(uint(int(n)/d.cfg.Replication))-2)
}

// gather collects the valid records of the set of name (pub nil) or of the
// publisher pub for name. A repeated gather within cacheTTL first asks the
// remembered closest peers and skips the lookup when they agree. Answers
// count towards agreement only if they hold valid records and come from a
// peer near the key, so far or lying peers cannot end a find early.
func (d *DHT) gather(ctx context.Context, name string, pub ed25519.PublicKey, now func() time.Time) ([][]byte, gatherStats) {
	key := Key(name)
	if pub != nil {
		key = PublisherKey(name, pub)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := &gatherer{d: d, req: request{Op: opGet, Name: name, Publisher: pub}, key: kb.ConvertKey(key),
		ctx: gctx, t0: time.Now(), now: now, near: d.nearPrefix(), done: make(chan struct{}), asked: map[peer.ID]bool{}, seen: map[string]bool{}, rejected: map[string]int{}}
	var st gatherStats
	finish := func() ([][]byte, gatherStats) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.closed = true
		st.asked, st.answered, st.first = len(g.asked), g.answered, g.first
		st.rejected = maps.Clone(g.rejected)
		return append([][]byte(nil), g.raws...), st
	}

	if cached := d.closest.get(key, time.Now()); len(cached) > 0 {
		for _, p := range cached[:min(cachedAsk, len(cached))] {
			g.ask(p, true)
		}
		if g.wait(gctx) {
			st.cached, st.early = true, true
			return finish()
		}
	}

	// The lookup, with storers asked as they turn up.
	evctx, events := routing.RegisterForQueryEvents(gctx)
	type result struct {
		peers []peer.ID
		err   error
	}
	lookupDone := make(chan result, 1)
	start := time.Now()
	go func() {
		p, err := d.kad.GetClosestPeers(evctx, key)
		lookupDone <- result{p, err}
	}()
	var res result
	lookupOver := false
	for !lookupOver {
		select {
		case ev, ok := <-events:
			if ok && ev.Type == routing.PeerResponse {
				g.consider(ev.ID)
			}
		case res = <-lookupDone:
			lookupOver = true
		case <-g.done:
			st.early = true
			st.lookup = time.Since(start)
			cancel() // ends the lookup; its events channel closes
			return finish()
		}
	}
	st.lookup = time.Since(start)
	st.lookupErr = res.err
	peers := d.capPeers(res.peers)
	st.closest = len(peers)
	if res.err == nil && len(peers) > 0 {
		d.closest.put(key, peers, time.Now())
	}
	for _, p := range peers {
		g.ask(p, true)
	}
	go func() { // drain what the lookup still publishes
		for range events {
		}
	}()
	g.wait(gctx)
	return finish()
}

// wait blocks until the answers agree (true), or every GET sent so far has
// answered or failed, or ctx ends (false).
func (g *gatherer) wait(ctx context.Context) bool {
	all := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(all)
	}()
	select {
	case <-g.done:
		return true
	case <-all:
		select {
		case <-g.done:
			return true
		default:
			return false
		}
	case <-ctx.Done():
		return false
	}
}
