package dht

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestSeedSkipsLookupCheck: a bootstrap peer just dialled enters the
// routing table at once, not after kad-dht's lookup check. The peer here
// never answers a FIND_NODE, so kad-dht alone would never take it.
func TestSeedSkipsLookupCheck(t *testing.T) {
	clk := &clock{t: time.Now()}
	cfg := Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	finder, boot, other := loopbackNode(t, cfg), loopbackNode(t, cfg), loopbackNode(t, Config{Mode: ModeClient, DisableAutoRefresh: true})
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
