package dht

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// goneCheck is a Config.PeerGone that reports one peer gone (once set)
// and counts the checks.
type goneCheck struct {
	gone   atomic.Value // peer.ID
	checks atomic.Int64
}

func (g *goneCheck) check(_ context.Context, p peer.ID) bool {
	g.checks.Add(1)
	id, _ := g.gone.Load().(peer.ID)
	return id != "" && p == id
}

// TestGonePeerEndsRequest: a storer that stops answering on its open
// connection, and that Config.PeerGone reports gone (a refused TCP port,
// in the node), ends its request after the probe delay and is forgotten,
// instead of holding the publish for its request budget (at least 1 s).
func TestGonePeerEndsRequest(t *testing.T) {
	clk := &clock{t: time.Now()}
	gc := &goneCheck{}
	pub := loopbackNode(t, Config{Mode: ModeServer, RequestTimeout: 10 * time.Minute, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true, PeerGone: gc.check})
	start := func() *testNode {
		return loopbackNode(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	}
	live, mute := start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connectStorers(t, pub, live, mute)
	if st, err := pub.dht.Publish(ctx, pub.record(t, "acme/gone", 1, clk.Now(), "127.0.0.1:9000")); err != nil || st.Stored != 2 {
		t.Fatalf("first publish: %+v, %v; want stored at both", st, err)
	}
	if n := pub.dht.Counters()["requests_peer_gone"]; n != 0 {
		t.Fatalf("%d requests ended as gone while every peer answered", n)
	}
	mute.host.SetStreamHandler(ProtocolID, func(s network.Stream) { <-ctx.Done(); s.Reset() })
	gc.gone.Store(mute.host.ID())

	st, err := pub.dht.Publish(ctx, pub.record(t, "acme/gone", 2, clk.Now(), "127.0.0.1:9000"))
	if err != nil || st.Stored != 1 {
		t.Fatalf("publish beside a gone storer: %+v, %v; want stored at the live one", st, err)
	}
	if n := pub.dht.Counters()["requests_peer_gone"]; n != 1 {
		t.Fatalf("requests ended as gone: %d, want 1 (counters %v)", n, pub.dht.Counters())
	}
	if pub.dht.LAN().RoutingTable().Find(mute.host.ID()) != "" {
		t.Error("the gone storer is still in the routing table")
	}
}

// TestGonePeerEndsLookupQuery: a lookup whose query to a peer goes
// unanswered checks the peer with Config.PeerGone after the probe delay and
// forgets it at once when it is gone, before the peer's request budget
// would have (lookup_silent_peers).
func TestGonePeerEndsLookupQuery(t *testing.T) {
	clk := &clock{t: time.Now()}
	gc := &goneCheck{}
	pub, _, mute, fz := frozenPeers(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true, PeerGone: gc.check})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := pub.dht.spaces[1]
	if _, err, _ := pub.dht.lookup(ctx, sp, record.Key("acme/frozen"), func(peer.ID) {}, nil, nil); err != nil {
		t.Fatalf("lookup before the freeze: %v", err)
	}
	fz.frozen.Store(true)
	gc.gone.Store(mute.host.ID())
	pub.dht.lookup(ctx, sp, record.Key("acme/frozen2"), func(peer.ID) {}, nil, nil)
	c := pub.dht.Counters()
	if c["lookup_gone_peers"] != 1 || c["lookup_silent_peers"] != 0 {
		t.Fatalf("lookup_gone_peers %d, lookup_silent_peers %d; want the gone peer forgotten by the check, not by its budget", c["lookup_gone_peers"], c["lookup_silent_peers"])
	}
	// The routing table is not checked here: the "gone" peer is alive
	// behind the frozen path and may dial back, and identify then adds it
	// again (TestGonePeerEndsRequest checks that forget drops it).
}

// TestLivePeerKeepsItsBudget: a peer that Config.PeerGone does not report
// gone keeps its request budget: a slow answer within it still counts.
func TestLivePeerKeepsItsBudget(t *testing.T) {
	clk := &clock{t: time.Now()}
	gc := &goneCheck{}
	pub := loopbackNode(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true, PeerGone: gc.check})
	slow := loopbackNode(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connectStorers(t, pub, slow)
	if st, err := pub.dht.Publish(ctx, pub.record(t, "acme/slow", 1, clk.Now(), "127.0.0.1:9000")); err != nil || st.Stored != 1 {
		t.Fatalf("first publish: %+v, %v", st, err)
	}
	// The storer now answers after 300 ms: past the probe delay (at least
	// 50 ms), within the request budget (at least 1 s).
	h := slow.dht.handle
	slow.host.SetStreamHandler(ProtocolID, func(s network.Stream) { time.Sleep(300 * time.Millisecond); h(s) })
	st, err := pub.dht.Publish(ctx, pub.record(t, "acme/slow", 2, clk.Now(), "127.0.0.1:9000"))
	if err != nil || st.Stored != 1 {
		t.Fatalf("publish to a slow storer: %+v, %v; want it stored", st, err)
	}
	if gc.checks.Load() == 0 {
		t.Error("the slow request was never checked")
	}
	if pub.dht.Counters()["requests_peer_gone"] != 0 {
		t.Error("a live peer's request ended as gone")
	}
}
