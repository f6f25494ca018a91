package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// join adds a node with cfg to mn, linked to every peer, and connects it
// to to.
func join(t *testing.T, mn mocknet.Mocknet, cfg Config, to ...*testNode) *testNode {
	t.Helper()
	return joinKey(t, mn, cfg, nil, to...)
}

// joinKey is join with the node's key (nil: a new one).
func joinKey(t *testing.T, mn mocknet.Mocknet, cfg Config, sk crypto.PrivKey, to ...*testNode) *testNode {
	t.Helper()
	if sk == nil {
		var err error
		if sk, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip6/100::1:%x/tcp/4242", len(mn.Peers())+1)))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	for _, o := range to {
		if err := h.Connect(context.Background(), peer.AddrInfo{ID: o.host.ID()}); err != nil {
			t.Fatal(err)
		}
	}
	raw, _ := sk.Raw()
	return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
}

func serverConfig(clk *clock, replication int) Config {
	return Config{Mode: ModeServer, Flat: true, BucketSize: 20, Replication: replication, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
}

// A server that joins after a record was stored is handed it by the
// storers it connects to: no republish brings it here.
func TestNewcomerIsHandedItsSets(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 5, clk, func(c *Config) { c.BucketSize = 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec := nodes[1].record(t, "acme/exchange", 1, clk.Now(), "127.0.0.1:9000")
	if st, err := nodes[1].dht.Publish(ctx, rec); err != nil || st.Stored < 4 {
		t.Fatalf("publish: %+v, %v", st, err)
	}
	nc := join(t, mn, serverConfig(clk, 0), nodes...)
	poll.T(t, "the record at the newcomer", func() bool {
		got := nc.dht.Store().Get("acme/exchange")
		return len(got) == 1 && bytes.Equal(got[0].Bytes(), rec.Bytes())
	})
}

// A newcomer that is not among the Replication closest peers of a set,
// and a client, are handed nothing.
func TestOnlyCloseServersAreHanded(t *testing.T) {
	clk := &clock{t: time.Now()}
	const repl = 3
	nodes, mn := testMocknet(t, 6, clk, func(c *Config) { c.BucketSize = 20; c.Replication = repl })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Whether a node hands a set depends on what its table knows: the
	// test needs every node to know every other.
	poll.T(t, "every table holding every other node", func() bool {
		for _, nd := range nodes {
			if nd.dht.Kad().RoutingTable().Size() < len(nodes)-1 {
				return false
			}
		}
		return true
	})
	rec := nodes[1].record(t, "acme/exchange", 1, clk.Now(), "127.0.0.1:9000")
	if _, err := nodes[1].dht.Publish(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// A key farther from the set's key than the repl closest nodes.
	k := kb.ConvertKey(setKey("acme/exchange", nil))
	// repl+2 nodes are closer, whoever counts: a table that misses a
	// peer for a moment (one forgotten after a failed request) still
	// ranks the newcomer beyond the repl closest.
	closest := nodes[0].dht.Kad().RoutingTable().NearestPeers(k, repl+2)
	far := kb.ConvertPeerID(closest[len(closest)-1])
	var sk crypto.PrivKey
	for {
		s, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(s)
		if closer(k, far, kb.ConvertPeerID(id)) {
			sk = s
			break
		}
	}
	client := join(t, mn, Config{Mode: ModeClient, Flat: true, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}, nodes...)
	farNode := joinKey(t, mn, serverConfig(clk, repl), sk, nodes...)
	poll.T(t, "the far newcomer in every table", func() bool {
		for _, nd := range nodes {
			if nd.dht.Kad().RoutingTable().Find(farNode.host.ID()) == "" {
				return false
			}
		}
		return true
	})
	// Every node has looked for both newcomers by now: the client was
	// never pending (it serves no DHT), the far node was found and
	// checked against the set.
	time.Sleep(handoffTries * handoffDelay)
	if n := len(client.dht.Store().Get("acme/exchange")) + len(farNode.dht.Store().Get("acme/exchange")); n != 0 {
		t.Fatalf("%d records reached the client (%d) or the far newcomer (%d)", n, len(client.dht.Store().Get("acme/exchange")), len(farNode.dht.Store().Get("acme/exchange")))
	}
}

// A node hands one newcomer at most handoffMax records, smallest sets
// first.
func TestHandoffIsCapped(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 1, clk, func(c *Config) { c.BucketSize = 20; c.PeerRate = 5 })
	holder := nodes[0]
	// One set of 3 records, and 20 sets of one.
	for i := range 3 {
		priv := testKey(byte(i + 1))
		r := testRecord(priv)
		r.Name, r.Issued, r.Expires = "acme/big", clk.Now(), clk.Now().Add(time.Minute)
		raw := mustSign(t, priv, r)
		if _, err := holder.dht.Store().Put("acme/big", raw); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		r := holder.record(t, fmt.Sprintf("acme/small-%02d", i), 1, clk.Now(), "127.0.0.1:9000")
		if _, err := holder.dht.Store().Put(r.Name, r.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	max := holder.dht.handoffMax()
	if max != 10 {
		t.Fatalf("handoffMax at 5 requests/s: %d, want 10", max)
	}
	nc := join(t, mn, serverConfig(clk, 0), holder)
	poll.T(t, "the newcomer handed its sets", func() bool { return holder.dht.Counters()["handoff_stored"] == uint64(max) })
	time.Sleep(3 * handoffDelay)
	if c := holder.dht.Counters(); c["handoff_sent"] != uint64(max) || c["handoff_capped"] != 1 {
		t.Fatalf("counters %v: want %d records sent, capped once", c, max)
	}
	if n := nc.dht.Store().Len(); n != max {
		t.Fatalf("the newcomer holds %d records, want %d", n, max)
	}
	if n := len(nc.dht.Store().Get("acme/big")); n != 0 {
		t.Fatalf("the large set went before the small ones: %d of its records handed", n)
	}
}

func TestUnbucket(t *testing.T) {
	pub := testKey(1).Public().(ed25519.PublicKey)
	for _, c := range []struct {
		pub   ed25519.PublicKey
		shard int
	}{{nil, 0}, {pub, 0}, {nil, 3}, {pub, 7}} {
		name, p, shard, err := unbucket(bucket("acme/exchange", c.pub, c.shard))
		if err != nil || name != "acme/exchange" || !bytes.Equal(p, c.pub) || shard != c.shard {
			t.Fatalf("unbucket(bucket(%x, %d)) = %q %x %d %v", c.pub, c.shard, name, p, shard, err)
		}
	}
	for _, bad := range []string{"acme/x#", "acme/x#0", "acme/x#-1", "acme/x#a", "acme/x@zz", "acme/x@00"} {
		if _, _, _, err := unbucket(bad); err == nil {
			t.Errorf("unbucket(%q): no error", bad)
		}
	}
}

// Only the handoffSenders storers closest to a set's key, the newcomer
// left out, hand it the set.
func TestHandoffSenders(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 8, clk, func(c *Config) { c.BucketSize = 20 })
	rt := nodes[0].dht.Kad().RoutingTable()
	self := nodes[0].host.ID()
	newcomer := nodes[1].host.ID()
	yes, no := 0, 0
	for i := range 64 {
		k := kb.ConvertKey(setKey(fmt.Sprintf("acme/c%d", i), nil))
		var others []peer.ID // every node but the newcomer, closest first
		for _, nd := range nodes {
			if id := nd.host.ID(); id != newcomer {
				others = append(others, id)
			}
		}
		sort.Slice(others, func(a, b int) bool { return closer(k, kb.ConvertPeerID(others[a]), kb.ConvertPeerID(others[b])) })
		want := slices.Index(others, self) < handoffSenders
		if got := amongSenders(rt, k, newcomer, self); got != want {
			t.Fatalf("key %d: amongSenders = %v, want %v (rank %d of %d)", i, got, want, slices.Index(others, self), len(others))
		}
		if want {
			yes++
		} else {
			no++
		}
	}
	if yes == 0 || no == 0 {
		t.Fatalf("64 keys gave %d senders and %d not: the test checks neither case", yes, no)
	}
}
