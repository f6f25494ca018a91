package dht

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Hot names: a name that many finders ask for at once. Two things spread
// the load off the name's storers, both off in a zero Config:
//
// The result cache (Config.FindCache): a node answers a find from the
// records its own last find of the same name and publishers verified,
// while that find is younger than FindCache on the finder's clock, and
// concurrent finds of one name share one network find. Each record is
// checked against the clock again when it is served (record.Check), so a
// cached record is never returned past its own expiry; withdrawals are
// kept, so a withdrawn instance does not come back when the next find
// meets a storer that still holds its older record. A withdrawal published
// after the cached find is seen at most FindCache later. A node then sends
// at most one find per name per FindCache, whatever its clients ask.
//
// Path caching (Config.PathCache): after a find whose answers agreed (the
// set is complete, see gatherer.tally), the finder stores the newest
// record of each instance it verified at the closest peer it asked that
// answered without some of them, as kad-dht does for values. The records
// keep their signatures and their own expiry, so a copy can neither
// outlive a record nor bring back a withdrawn instance (the storer keeps
// the higher sequence number); the peer takes them only if it is among
// the 2×Replication closest to the key, as for any PUT, and serves them
// as it serves every set.

// maxResults bounds the entries of the result cache.
const maxResults = 4096

// resultCache is the result cache of Config.FindCache. Its methods are
// safe for concurrent use.
type resultCache struct {
	mu sync.Mutex
	m  map[string]*result
}

// result is one cached find: the newest verified record of each instance
// (withdrawals included, publisher filter applied) and when the find
// ended, on the finder's clock. While the find runs, ready is open and
// the entry is not served.
type result struct {
	recs   []*record.Record
	at     time.Time
	ready  chan struct{}
	filled bool
}

// resultKey names a find by its name and its publishers, in any order.
func resultKey(name string, publishers []ed25519.PublicKey) string {
	keys := make([]string, 0, len(publishers))
	for _, p := range publishers {
		keys = append(keys, hex.EncodeToString(p))
	}
	slices.Sort(keys)
	return name + "|" + strings.Join(keys, ",")
}

// fresh reports whether e may answer a find at now.
func (e *result) fresh(now time.Time, ttl time.Duration) bool {
	return e.filled && !now.Before(e.at) && now.Sub(e.at) < ttl
}

// live returns the records of e that are live instances at now.
func (e *result) live(now time.Time) []*record.Record {
	out := make([]*record.Record, 0, len(e.recs))
	for _, r := range e.recs {
		if !r.Withdrawn && r.Check(now) == nil {
			out = append(out, r)
		}
	}
	return out
}

// findCached is Find through the result cache. Only the result of a find
// whose answers agreed (FindStats.Agreed) is kept: a find cut short by a
// slow storer may have missed an instance, and the cache would repeat
// that.
func (d *Node) findCached(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time) ([]*record.Record, FindStats, error) {
	key := resultKey(name, publishers)
	c := &d.results
	for {
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]*result{}
		}
		e := c.m[key]
		t := now()
		switch {
		case e != nil && e.fresh(t, d.cfg.FindCache):
			recs := e.live(t)
			c.mu.Unlock()
			d.count.add("find_cache_hits", 1)
			return recs, FindStats{Rejected: map[string]int{}, FromCache: true}, nil
		case e != nil && !e.filled:
			// Another find of the name runs: share its result.
			ready := e.ready
			c.mu.Unlock()
			select {
			case <-ready:
				continue
			case <-ctx.Done():
				return nil, FindStats{Rejected: map[string]int{}}, ctx.Err()
			}
		}
		var withdrawn []*record.Record // kept from the stale entry
		if e != nil {
			for _, r := range e.recs {
				if r.Withdrawn && r.Check(t) == nil {
					withdrawn = append(withdrawn, r)
				}
			}
		}
		mine := &result{ready: make(chan struct{})}
		c.putLocked(key, mine, t)
		c.mu.Unlock()
		d.count.add("find_cache_misses", 1)

		recs, st, err := d.findNewest(ctx, name, publishers, now, withdrawn)
		c.mu.Lock()
		switch {
		case err == nil && st.Agreed:
			mine.recs, mine.at, mine.filled = recs, now(), true
		case c.m[key] != mine:
		case e != nil:
			c.m[key] = e // stale, but its withdrawals still count
		default:
			delete(c.m, key)
		}
		close(mine.ready)
		c.mu.Unlock()
		return Live(recs), st, err
	}
}

// putLocked adds e under key, making room if the cache is full. Called
// with c.mu held.
func (c *resultCache) putLocked(key string, e *result, now time.Time) {
	if len(c.m) >= maxResults {
		for k, o := range c.m {
			if o.filled && !o.fresh(now, record.MaxLifetime) {
				delete(c.m, k)
			}
		}
		for k, o := range c.m { // still full: drop any finished entry
			if len(c.m) < maxResults {
				break
			}
			if o.filled {
				delete(c.m, k)
			}
		}
	}
	c.m[key] = e
}

// findNewest is Find keeping withdrawals (Newest, then the publisher
// filter), with the records in extra merged in as if a storer had sent
// them.
func (d *Node) findNewest(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time, extra []*record.Record) ([]*record.Record, FindStats, error) {
	raws, verified, st, err := d.collect(ctx, name, publishers, now, nil)
	if err != nil && !errors.Is(err, ErrNoPeers) {
		return nil, st, err
	}
	for _, r := range extra {
		raws = append(raws, r.Bytes())
	}
	recs := newest(name, raws, verified, now(), st.Rejected)
	return keepTrusted(recs, publishers, st.Rejected), st, err
}

// cacheOnPath stores the set g verified at the closest peer it asked that
// answered without some of its instances (Config.PathCache), in the
// background. It does nothing unless agreeQuorum answers agreed, so that
// only a complete set is copied. Called with g.mu held.
func (d *Node) cacheOnPath(g *gatherer) {
	if !d.cfg.PathCache || len(g.agreers) < agreeQuorum || len(g.raws) == 0 {
		return
	}
	var to peer.ID
	for p, n := range g.knew {
		if n < len(g.seenPeer) && (to == "" || closer(g.key, kb.ConvertPeerID(p), kb.ConvertPeerID(to))) {
			to = p
		}
	}
	if to == "" {
		return
	}
	raws := slices.Clone(g.raws)
	req := g.req
	now := g.now
	select {
	case <-d.done:
		return
	default:
	}
	d.count.add("path_cache_started", 1)
	go func() {
		defer d.count.add("path_cache_ended", 1)
		ctx, cancel := d.background(context.WithoutCancel(g.ctx), d.cfg.RequestTimeout)
		defer cancel()
		for _, r := range Newest(req.Name, raws, now(), nil) {
			d.count.add("path_cache_sent", 1)
			d.count.add("put_sent", 1)
			_, err := d.call(ctx, to, request{Op: opPut, Name: req.Name, Publisher: req.Publisher, Shard: req.Shard, Record: r.Bytes()})
			var remote *RemoteError
			switch {
			case err == nil:
				d.count.add("path_cache_stored", 1)
			case errors.As(err, &remote) && strings.Contains(remote.Msg, "not among the closest"):
				d.count.add("path_cache_refused", 1)
				return
			case errors.As(err, &remote):
				// Stale or full: a newer copy is held, or no room; the
				// other records may still go.
				d.count.add("path_cache_refused", 1)
			default:
				return
			}
		}
	}()
}
