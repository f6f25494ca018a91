package dht

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/peer"
)

// holders returns the nodes whose store holds a record of name from p.
func holders(nodes []*testNode, name string, p peer.ID) []peer.ID {
	var out []peer.ID
	for _, n := range nodes {
		for _, r := range n.dht.Store().Get(name) {
			if r.Peer == p {
				out = append(out, n.host.ID())
			}
		}
	}
	return out
}

// A PUT marked Forward of the sender's own record is stored by the
// forwarder at the closest peers it is connected to, unmarked; a second
// one for the same set within forwardEvery, another node's record, and a
// record that does not verify are not forwarded.
func TestForwardedPut(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 12, clk)
	fwd := nodes[0] // connected to every other node
	// The sender is a client that only fwd knows: any other holder got
	// the record from fwd.
	sender := join(t, mn, Config{Mode: ModeClient, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}, fwd)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	put := func(n *testNode, seq uint64, mangle bool) error {
		raw := n.record(t, "acme/fwd", seq, clk.Now(), "10.0.0.9:1").Bytes()
		if mangle {
			raw = slices.Clone(raw)
			raw[len(raw)-1] ^= 1
		}
		_, err := sender.dht.call(ctx, fwd.host.ID(), request{Op: opPut, Name: "acme/fwd", Record: raw, Forward: true})
		return err
	}
	raw := sender.record(t, "acme/fwd", 1, clk.Now(), "10.0.0.9:1").Bytes()
	resp, _ := sender.dht.call(ctx, fwd.host.ID(), request{Op: opPut, Name: "acme/fwd", Record: raw, Forward: true})
	if resp == nil || len(resp.Forwarding) == 0 || len(resp.Forwarding) > fwd.dht.cfg.Replication {
		t.Fatalf("the forwarder's answer: %+v (want 1 to %d peers it forwards to)", resp, fwd.dht.cfg.Replication)
	}
	// Only fwd sends the others PUTs here: wait until they have all
	// received the forwarded ones.
	poll.T(t, "the forwarded PUTs received", func() bool {
		sent := fwd.dht.Counters()["forward_sent"]
		return sent > 0 && sumReceived(nodes[1:]) >= sent
	})
	c := fwd.dht.Counters()
	got := holders(nodes[1:], "acme/fwd", sender.host.ID())
	if c["forwarded"] != 1 || c["forward_sent"] != uint64(len(resp.Forwarding)) || len(got) == 0 || uint64(len(got)) > c["forward_sent"] {
		t.Fatalf("forwarder: %d forwarded, %d PUTs sent, %d holders (want 1, at most %d, 1 to the PUTs)",
			c["forwarded"], c["forward_sent"], len(got), fwd.dht.cfg.Replication)
	}
	for _, n := range nodes[1:] {
		if f := n.dht.Counters()["forwarded"] + n.dht.Counters()["forward_refused"]; f != 0 {
			t.Fatalf("a forwarded PUT was marked Forward: %s counted %d", n.host.ID(), f)
		}
	}

	_ = put(sender, 2, false) // the same set again, within forwardEvery
	_ = put(nodes[5], 1, false)
	_ = put(sender, 3, true)
	c = fwd.dht.Counters()
	if c["forwarded"] != 1 || c["forward_limited"] != 1 || c["forward_refused"] != 2 {
		t.Fatalf("forwarder after a repeat, another's record and a bad one: %d forwarded, %d limited, %d refused (want 1, 1, 2)",
			c["forwarded"], c["forward_limited"], c["forward_refused"])
	}
}

// sumReceived counts the PUTs the nodes received.
func sumReceived(nodes []*testNode) uint64 {
	var n uint64
	for _, nd := range nodes {
		n += nd.dht.Counters()["put_received"]
	}
	return n
}

// A newcomer's first publish (its routing table holds fewer peers than a
// record's storers) asks the peers it is connected to to forward it; an
// established node's does not.
func TestYoungPublishAsksForward(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 12, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old := nodes[3]
	if _, err := old.dht.Publish(ctx, old.record(t, "acme/old", 1, clk.Now(), "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if n := old.dht.Counters()["forward_asked"]; n != 0 && !old.dht.young(old.dht.spaces[0]) {
		t.Fatalf("an established node asked %d peers to forward", n)
	}
	// The newcomer reaches only its bootstrap peer (nodes[0]), which is
	// among the closest to the name: its own publish stores there alone,
	// and every other copy is a forwarded one.
	fwd := nodes[0]
	name := ""
	for i := 0; name == ""; i++ {
		if n := fmt.Sprintf("acme/new%d", i); fwd.dht.among(n, nil, 2*fwd.dht.cfg.Replication) {
			name = n
		}
	}
	cfg := Config{Mode: ModeServer, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	newcomer := join(t, mn, cfg, fwd)
	for _, n := range nodes[1:] {
		_ = mn.UnlinkPeers(newcomer.host.ID(), n.host.ID())
	}
	poll.T(t, "the newcomer's table holds its bootstrap peer", func() bool { return newcomer.dht.Kad().RoutingTable().Size() > 0 })
	if !newcomer.dht.young(newcomer.dht.spaces[0]) {
		t.Skip("the newcomer's table filled before its publish")
	}
	handedBefore := uint64(0)
	for _, n := range nodes {
		handedBefore += n.dht.Counters()["handoff_stored"]
	}
	if _, err := newcomer.dht.Publish(ctx, newcomer.record(t, name, 1, clk.Now(), "10.0.0.2:1")); err != nil {
		t.Fatal(err)
	}
	if n := newcomer.dht.Counters()["forward_asked"]; n == 0 {
		t.Fatal("a newcomer's first publish asked no peer to forward it")
	}
	poll.T(t, "the forwarded copies stored", func() bool {
		c := fwd.dht.Counters()
		return c["forwarded"] == 1 && len(holders(nodes[1:], name, newcomer.host.ID())) > 0
	})
	time.Sleep(100 * time.Millisecond) // the rest of the forwarded PUTs
	// A withdrawal goes to the publish's holders: the peers the forwarder
	// named must be among them (besides the one peer that took the
	// newcomer's own PUT), and so must every peer that holds the record,
	// unless a storer handed it on to a peer it took for a newcomer.
	held := newcomer.dht.spaces[0].holders.get(setKey(name, nil), time.Now())
	if sent := fwd.dht.Counters()["forward_sent"]; uint64(len(held)) < sent {
		t.Fatalf("holders %v: fewer than the %d peers the record was forwarded to", held, sent)
	}
	handed := uint64(0)
	for _, n := range nodes {
		handed += n.dht.Counters()["handoff_stored"]
	}
	for _, h := range holders(nodes, name, newcomer.host.ID()) {
		if !slices.Contains(held, h) && handed == handedBefore {
			t.Errorf("%s holds the newcomer's record but is not among its holders %v: its withdrawal would miss it", h, held)
		}
	}
}

// A forwarder that stores the record itself (it is among the key's
// closest by its own table, the rule by which any storer takes a PUT) is
// among the peers askForward hands to the publish's holders, so that a
// withdrawal reaches it even when the publish's lookup does not name it;
// one that only forwards is not.
func TestForwarderThatStoresIsAHolder(t *testing.T) {
	clk := &clock{t: time.Now()}
	// A table that holds every peer, and a replication well below their
	// number: the forwarder is among the closest for some names only.
	nodes, mn := testMocknet(t, 12, clk, func(c *Config) { c.BucketSize, c.Replication = 20, 3 })
	fwd := nodes[0] // connected to every other node
	sender := join(t, mn, Config{Mode: ModeClient, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}, fwd)
	poll.T(t, "the sender's table holds the forwarder", func() bool { return sender.dht.Kad().RoutingTable().Find(fwd.host.ID()) != "" })
	for _, n := range nodes[1:] { // fwd is the one peer asked to forward
		_ = mn.UnlinkPeers(sender.host.ID(), n.host.ID())
		_ = sender.host.Network().ClosePeer(n.host.ID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, stores := range []bool{true, false} {
		name := ""
		for i := 0; name == "" && i < 1000; i++ {
			n := fmt.Sprintf("acme/holder%d", i)
			if fwd.dht.among(n, nil, 2*fwd.dht.cfg.Replication) == stores { // the rule of a PUT
				name = n
			}
		}
		if name == "" {
			t.Fatalf("no name for which the forwarder stores: %v (table of %d)", stores, fwd.dht.Kad().RoutingTable().Size())
		}
		raw := sender.record(t, name, 1, clk.Now(), "10.0.0.9:1").Bytes()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var to []peer.ID
		var took bool
		sender.dht.askForward(ctx, &wg, sender.dht.spaces[0], setKey(name, nil), request{Op: opPut, Name: name, Record: raw}, func(stored bool, p []peer.ID) {
			mu.Lock()
			to = append(to, p...)
			took = took || stored && p[0] == fwd.host.ID()
			mu.Unlock()
		})
		wg.Wait()
		if asked := sender.dht.Counters()["forward_asked"]; asked != map[bool]uint64{true: 1, false: 2}[stores] {
			t.Fatalf("%s: %d peers asked to forward so far, want only the forwarder", name, asked)
		}
		stored := slices.Contains(holders([]*testNode{fwd}, name, sender.host.ID()), fwd.host.ID())
		if stored != stores {
			t.Fatalf("%s: the forwarder stored it: %v, want %v", name, stored, stores)
		}
		if got := slices.Contains(to, fwd.host.ID()); got != stores {
			t.Errorf("%s: the forwarder stored the record: %v; among the holders handed on: %v (%v)", name, stored, got, to)
		}
		if took != stores { // Publish counts it as a remote store
			t.Errorf("%s: the forwarder stored the record: %v; askForward says so: %v", name, stored, took)
		}
		if len(to) == 0 {
			t.Errorf("%s: no holder handed on (the forwarder forwards to its closest)", name)
		}
	}
	// A whole publish whose own PUTs all fail (the sender reaches no
	// storer) still remembers the peers the record was forwarded to.
	name := ""
	for i := 0; name == "" && i < 1000; i++ {
		if n := fmt.Sprintf("acme/unreached%d", i); !fwd.dht.among(n, nil, 2*fwd.dht.cfg.Replication) {
			name = n
		}
	}
	if _, err := sender.dht.Publish(ctx, sender.record(t, name, 1, clk.Now(), "10.0.0.9:1")); err == nil {
		t.Fatalf("%s: a publish that no storer took reported no error", name)
	}
	poll.T(t, "the forwarded copies stored", func() bool { return len(holders(nodes[1:], name, sender.host.ID())) > 0 })
	held := sender.dht.spaces[0].holders.get(setKey(name, nil), time.Now())
	for _, h := range holders(nodes, name, sender.host.ID()) {
		if !slices.Contains(held, h) {
			t.Errorf("%s holds %s but is not among the failed publish's holders %v: its withdrawal would miss it", h, name, held)
		}
	}
}
