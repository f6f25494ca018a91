package dht

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/peer"
)

// withdrawal is a signed withdrawal of n's instance of name.
func (n *testNode) withdrawal(t *testing.T, name string, seq uint64, now time.Time) *record.Record {
	t.Helper()
	w, err := record.Sign(n.priv, record.Record{Name: name, PublicKey: n.priv.Public().(ed25519.PublicKey),
		Seq: seq, Issued: now, Expires: now.Add(time.Minute), Withdrawn: true})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// The result cache answers a repeated find without a message, never past
// a record's own expiry, shares one network find among concurrent finds,
// and keeps withdrawals, so that a storer's older record does not bring a
// withdrawn instance back.
func TestFindCache(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 16, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const name = "acme/hot"
	for i, nd := range nodes[1:4] {
		r := nd.record(t, name, 1, clk.Now(), "127.0.0.1:900"+string(rune('1'+i)))
		if i == 1 { // a short life: expires 1 s from now (served until +MaxSkew)
			var err error
			if r, err = record.Sign(nd.priv, record.Record{Name: name, PublicKey: nd.priv.Public().(ed25519.PublicKey),
				Endpoints: []string{"127.0.0.1:9999"}, Seq: 1, Issued: clk.Now(), Expires: clk.Now().Add(time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := nd.dht.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	finder := nodes[9]
	finder.dht.cfg.FindCache = 10 * time.Second
	sent := func() uint64 { return finder.dht.Counters()["get_sent"] }

	recs, st, err := finder.dht.Find(ctx, name, nil, clk.Now)
	if err != nil || len(recs) != 3 || st.FromCache || !st.Agreed {
		t.Fatalf("first find: %d records, %+v, %v", len(recs), st, err)
	}
	before := sent()
	recs, st, err = finder.dht.Find(ctx, name, nil, clk.Now)
	if err != nil || len(recs) != 3 || !st.FromCache || sent() != before {
		t.Fatalf("repeated find: %d records, %+v, %v; %d GETs sent", len(recs), st, err, sent()-before)
	}

	// Past the short record's life (+ skew), the cache leaves it out
	// although the entry is fresh.
	clk.Add(record.MaxSkew + 2*time.Second)
	recs, st, _ = finder.dht.Find(ctx, name, nil, clk.Now)
	if got := peersOf(recs); !st.FromCache || len(got) != 2 || got[nodes[2].host.ID()] {
		t.Fatalf("after the short record's expiry: %v, %+v", got, st)
	}

	// Past the cache's life, concurrent finds share one network find.
	clk.Add(10 * time.Second)
	misses := finder.dht.Counters()["find_cache_misses"]
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			recs, _, err := finder.dht.Find(ctx, name, nil, clk.Now)
			if err != nil || len(recs) != 2 {
				t.Errorf("concurrent find: %d records, %v", len(recs), err)
			}
		})
	}
	wg.Wait()
	if n := finder.dht.Counters()["find_cache_misses"] - misses; n != 1 {
		t.Fatalf("20 concurrent finds ran %d network finds, want 1", n)
	}

	// A withdrawal the cache saw hides the instance from the next find,
	// though the storers still hold its older record.
	w := nodes[1].withdrawal(t, name, 2, clk.Now())
	c := &finder.dht.results
	c.mu.Lock()
	for _, e := range c.m {
		e.recs = append(e.recs, w)
		e.at = clk.Now().Add(-time.Hour) // stale: the next find asks the network
	}
	c.mu.Unlock()
	recs, st, err = finder.dht.Find(ctx, name, nil, clk.Now)
	if got := peersOf(recs); err != nil || st.FromCache || len(got) != 1 || got[nodes[1].host.ID()] {
		t.Fatalf("after a cached withdrawal: %v, %+v, %v", got, st, err)
	}
}

// Path caching copies a verified set, with its records' own bytes (their
// signatures and expiry), to a peer on the finders' paths that lacked it.
func TestPathCache(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 40, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const name = "acme/path"
	want := map[string]bool{}
	for i, nd := range nodes[1:4] {
		r := nd.record(t, name, 1, clk.Now(), "127.0.0.1:900"+string(rune('1'+i)))
		if _, err := nd.dht.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[string(r.Bytes())] = true
	}
	before := map[peer.ID]int{}
	for _, nd := range nodes {
		before[nd.host.ID()] = len(nd.dht.Store().Get(name))
	}
	for _, nd := range nodes {
		nd.dht.cfg.PathCache = true
	}
	var cache *testNode
	for _, f := range nodes[4:] {
		if _, _, err := f.dht.Find(ctx, name, nil, clk.Now); err != nil {
			t.Fatal(err)
		}
		poll.T(t, "the path-cache PUTs of the find", func() bool {
			c := f.dht.Counters()
			return c["path_cache_ended"] == c["path_cache_started"]
		})
		for _, nd := range nodes {
			if got := nd.dht.Store().Get(name); before[nd.host.ID()] < 3 && len(got) == 3 {
				cache = nd
				for _, r := range got {
					if !want[string(r.Bytes())] {
						t.Fatalf("path cache %s holds a record that was not published", nd.host.ID())
					}
				}
			}
		}
		if cache != nil {
			break
		}
	}
	if cache == nil {
		var stored uint64
		for _, nd := range nodes {
			stored += nd.dht.Counters()["path_cache_stored"]
		}
		t.Fatalf("no peer took the whole set from a path cache (%d records stored)", stored)
	}
}
