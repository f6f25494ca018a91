package dht

import (
	"context"
	"slices"
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
	_ = put(sender, 1, false) // fwd may not be among the closest: its own answer does not matter
	poll.T(t, "the forwarded PUTs stored", func() bool {
		return len(holders(nodes[1:], "acme/fwd", sender.host.ID())) > 0 && fwd.dht.Counters()["forward_sent"] > 0 &&
			sumStored(nodes[1:]) >= fwd.dht.Counters()["forward_sent"]
	})
	c := fwd.dht.Counters()
	got := holders(nodes[1:], "acme/fwd", sender.host.ID())
	if c["forwarded"] != 1 || c["forward_sent"] > uint64(fwd.dht.cfg.Replication) || uint64(len(got)) > c["forward_sent"] {
		t.Fatalf("forwarder: %d forwarded, %d PUTs sent, %d holders (want 1, at most %d, at most the PUTs)",
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

// sumStored counts the PUTs the nodes received and stored.
func sumStored(nodes []*testNode) uint64 {
	var n uint64
	for _, nd := range nodes {
		n += uint64(len(nd.dht.Store().Get("acme/fwd")))
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
	cfg := Config{Mode: ModeServer, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	newcomer := join(t, mn, cfg, nodes[0])
	poll.T(t, "the newcomer's table holds its bootstrap peer", func() bool { return newcomer.dht.Kad().RoutingTable().Size() > 0 })
	if !newcomer.dht.young(newcomer.dht.spaces[0]) {
		t.Skip("the newcomer's table filled before its publish")
	}
	if _, err := newcomer.dht.Publish(ctx, newcomer.record(t, "acme/new", 1, clk.Now(), "10.0.0.2:1")); err != nil {
		t.Fatal(err)
	}
	if n := newcomer.dht.Counters()["forward_asked"]; n == 0 {
		t.Fatal("a newcomer's first publish asked no peer to forward it")
	}
	poll.T(t, "a forward", func() bool { return nodes[0].dht.Counters()["forwarded"] == 1 })
}
