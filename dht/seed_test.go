package dht

import (
	"context"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// seedNodes returns the nodes of a Seed test on loopback: the node that
// seeds, a DHT server to seed it with, and a DHT client.
func seedNodes(t *testing.T) (finder, server, client *testNode) {
	clk := &clock{t: time.Now()}
	cfg := Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	return loopbackNode(t, cfg), loopbackNode(t, cfg), loopbackNode(t, Config{Mode: ModeClient, DisableAutoRefresh: true})
}

// TestSeedSkipsLookupCheck: a bootstrap peer just dialled enters the
// routing table at once, not after kad-dht's lookup check. The peer here
// never answers a FIND_NODE, so kad-dht alone would never take it.
func TestSeedSkipsLookupCheck(t *testing.T) {
	finder, boot, other := seedNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sp := range boot.dht.spaces {
		boot.host.SetStreamHandler(sp.proto, func(s network.Stream) { <-ctx.Done(); _ = s.Reset() })
	}
	for _, p := range []*testNode{boot, other} {
		if err := finder.host.Connect(ctx, peer.AddrInfo{ID: p.host.ID(), Addrs: p.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	if n := finder.dht.TableSizes()["lan"]; n != 0 {
		t.Fatalf("the LAN table holds %d peers before Seed; the lookup check should have kept the mute peer out", n)
	}
	if n := finder.dht.Seed([]peer.ID{boot.host.ID(), other.host.ID(), finder.host.ID()}); n != 1 {
		t.Fatalf("Seed took %d peers into tables, want 1 (the server, into the LAN table)", n)
	}
	if got := finder.dht.LAN().RoutingTable().Find(boot.host.ID()); got != boot.host.ID() {
		t.Error("the server is not in the LAN table")
	}
	if finder.dht.LAN().RoutingTable().Find(other.host.ID()) != "" {
		t.Error("a DHT client (it does not serve the protocol) entered the LAN table")
	}
	if finder.dht.TableSizes()["wan"] != 0 {
		t.Error("a loopback peer entered the WAN table")
	}
}

// TestSeedTakesUnidentifiedPeer: bootstrap peers dialled without waiting
// for identify enter the table at once; one that identify then shows does
// not speak the table's protocol is dropped again.
func TestSeedTakesUnidentifiedPeer(t *testing.T) {
	finder, boot, client := seedNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range []*testNode{boot, client} {
		// Identify never answers: finder learns what they speak only
		// when the test says so.
		p.host.SetStreamHandler(identify.ID, func(s network.Stream) { <-ctx.Done(); _ = s.Reset() })
		finder.host.Peerstore().AddAddrs(p.host.ID(), p.host.Addrs(), peerstore.TempAddrTTL)
		if _, err := finder.host.Network().DialPeer(ctx, p.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if n := finder.dht.Seed([]peer.ID{boot.host.ID(), client.host.ID()}); n != 2 {
		t.Fatalf("Seed took %d unidentified peers into tables, want 2 (both, into the LAN table)", n)
	}
	lan := finder.dht.LAN().RoutingTable()
	if lan.Find(boot.host.ID()) == "" || lan.Find(client.host.ID()) == "" {
		t.Fatal("a seeded peer is not in the LAN table")
	}
	// What identify would record: the server speaks the LAN DHT, the
	// client does not.
	lanProto := finder.dht.spaces[1].proto
	if err := finder.host.Peerstore().SetProtocols(boot.host.ID(), identify.ID, lanProto, ProtocolID); err != nil {
		t.Fatal(err)
	}
	if err := finder.host.Peerstore().SetProtocols(client.host.ID(), identify.ID, ProtocolID); err != nil {
		t.Fatal(err)
	}
	poll.T(t, "the client dropped from the LAN table", func() bool { return lan.Find(client.host.ID()) == "" })
	if lan.Find(boot.host.ID()) == "" {
		t.Fatal("the server was dropped too")
	}
	if n := finder.dht.Counters()["seed_dropped"]; n != 1 {
		t.Fatalf("seed_dropped = %d, want 1", n)
	}
}
