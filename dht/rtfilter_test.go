package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// TestWANRoutingTableDiversity: the WAN DHT (kad-dht's dual, as New sets it
// up) takes at most 3 peers of one IP group (here a /16) into its routing
// table, at most 2 per bucket, however many of them connect; peers of
// other groups, and LAN peers, are not limited. (docs/security.md,
// eclipse.) Flat, as the simulator runs, has no such filter.
func TestWANRoutingTableDiversity(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	start := func(addr string, flat bool) *testNode {
		t.Helper()
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast(addr))
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(h, Config{Mode: ModeServer, Flat: flat, DisableAutoRefresh: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		raw, _ := sk.Raw()
		return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
	}
	for _, flat := range []bool{false, true} {
		t.Run(fmt.Sprintf("flat=%v", flat), func(t *testing.T) {
			self := start("/ip4/30.1.0.1/tcp/4001", flat)
			var sybils, others []*testNode
			for i := range 8 { // one /16
				sybils = append(sybils, start(fmt.Sprintf("/ip4/50.1.%d.1/tcp/4001", i), flat))
			}
			for i := range 4 { // a /16 each
				others = append(others, start(fmt.Sprintf("/ip4/%d.2.0.1/tcp/4001", 60+i), flat))
			}
			if err := mn.LinkAll(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			inTable := func(n *testNode) bool { return self.dht.Kad().RoutingTable().Find(n.host.ID()) != "" }
			waitUntil := func(what string, cond func() bool) {
				t.Helper()
				for !cond() {
					if ctx.Err() != nil {
						t.Fatalf("timed out waiting for %s", what)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			// The Sybils first, each until identify says it speaks the WAN
			// DHT; the routing table then handles their events before those
			// of the peers that connect after them.
			for _, s := range sybils {
				if err := self.host.Connect(ctx, peer.AddrInfo{ID: s.host.ID()}); err != nil {
					t.Fatal(err)
				}
				waitUntil("identify", func() bool {
					ps, _ := self.host.Peerstore().SupportsProtocols(s.host.ID(), ProtocolPrefix+"/kad/1.0.0")
					return len(ps) > 0
				})
			}
			for _, o := range others {
				if err := self.host.Connect(ctx, peer.AddrInfo{ID: o.host.ID()}); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil("the other groups' peers in the table", func() bool { return !slices.ContainsFunc(others, func(o *testNode) bool { return !inTable(o) }) })
			n := 0
			for _, s := range sybils {
				if inTable(s) {
					n++
				}
			}
			switch {
			case !flat && (n < 1 || n > 3):
				t.Fatalf("WAN table holds %d of 8 peers of one /16, want 1 to 3", n)
			case flat && n != len(sybils):
				t.Fatalf("flat table holds %d of 8 peers of one /16, want all", n)
			}
			t.Logf("%d of 8 peers of one /16 in the table", n)
		})
	}
}
