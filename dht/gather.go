package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
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
	done chan struct{} // closed once the answers agree

	mu        sync.Mutex
	wg        sync.WaitGroup
	asked     map[peer.ID]bool
	responded []peer.ID // lookup responders, closest first
	raws      [][]byte
	seen      map[string]bool
	agree     int // non-empty answers in a row that held nothing new
	answered  int
	first     time.Duration
	closed    bool
}

// ask sends the GET to p once.
func (g *gatherer) ask(p peer.ID) {
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
		g.mu.Lock()
		defer g.mu.Unlock()
		g.answered++
		if len(resp.Records) == 0 {
			return
		}
		if g.first == 0 {
			g.first = time.Since(g.t0)
		}
		fresh := false
		for _, r := range resp.Records {
			if !g.seen[string(r)] {
				g.seen[string(r)] = true
				g.raws = append(g.raws, r)
				fresh = true
			}
		}
		if fresh {
			g.agree = 1
		} else {
			g.agree++
		}
		if g.agree >= agreeQuorum && !g.closed {
			g.closed = true
			close(g.done)
		}
	}()
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
		g.ask(p)
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
}

// gather collects the set of name (pub nil) or of the publisher pub for
// name. A repeated gather within cacheTTL first asks the remembered closest
// peers and skips the lookup when they agree.
func (d *DHT) gather(ctx context.Context, name string, pub ed25519.PublicKey) ([][]byte, gatherStats) {
	key := Key(name)
	if pub != nil {
		key = PublisherKey(name, pub)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := &gatherer{d: d, req: request{Op: opGet, Name: name, Publisher: pub}, key: kb.ConvertKey(key),
		ctx: gctx, t0: time.Now(), done: make(chan struct{}), asked: map[peer.ID]bool{}, seen: map[string]bool{}}
	var st gatherStats
	finish := func() ([][]byte, gatherStats) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.closed = true
		st.asked, st.answered, st.first = len(g.asked), g.answered, g.first
		return append([][]byte(nil), g.raws...), st
	}

	if cached := d.closest.get(key, time.Now()); len(cached) > 0 {
		for _, p := range cached[:min(cachedAsk, len(cached))] {
			g.ask(p)
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
		g.ask(p)
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
