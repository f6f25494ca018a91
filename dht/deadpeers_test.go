package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// blackHole listens on loopback TCP, accepts, and never says a word: a dial
// to it hangs in the security handshake until someone gives up.
func blackHole(t *testing.T) ma.Multiaddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port))
}

// TestDeadPeersBounded: a routing table full of peers that accept TCP and
// never speak costs a publish the dial budget, not the transport's dial
// timeout (set to 10 minutes here, so that a publish that waited on them
// would outlive its one-minute context), and the dead peers leave the table.
func TestDeadPeersBounded(t *testing.T) {
	clk := &clock{t: time.Now()}
	start := func() *testNode {
		return loopbackNode(t, Config{Mode: ModeServer, DialTimeout: 300 * time.Millisecond, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}, libp2p.SwarmOpts(swarm.WithDialTimeout(10*time.Minute), swarm.WithDialTimeoutLocal(10*time.Minute)))
	}
	pub, storer := start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pub.host.Connect(ctx, peer.AddrInfo{ID: storer.host.ID(), Addrs: storer.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	// identify adds the storer
	poll.T(t, "the storer in the routing table", func() bool { return pub.dht.TableSizes()["lan"] > 0 })
	var dead []peer.ID
	for range 12 {
		id, err := test.RandPeerID()
		if err != nil {
			t.Fatal(err)
		}
		pub.host.Peerstore().AddAddr(id, blackHole(t), peerstore.PermanentAddrTTL)
		if ok, err := pub.dht.LAN().RoutingTable().TryAddPeer(id, true, false); !ok || err != nil {
			t.Fatalf("could not plant a dead peer: %v", err)
		}
		dead = append(dead, id)
	}

	st, err := pub.dht.Publish(ctx, pub.record(t, "acme/dead", 1, clk.Now(), "127.0.0.1:9000"))
	if err != nil {
		t.Fatalf("publish with a table of dead peers: %v (%+v)", err, st)
	}
	if ctx.Err() != nil {
		t.Fatal("publish waited on the dead peers past its context")
	}
	if st.Stored != 1 {
		t.Fatalf("stored at %d peers, want the one live storer", st.Stored)
	}
	for _, id := range dead {
		if pub.dht.LAN().RoutingTable().Find(id) != "" {
			t.Fatalf("dead peer %s still in the routing table", id)
		}
	}
}

// loopbackNode starts a DHT node with cfg on a real libp2p host listening
// on loopback TCP (with opts added to the host's), closed when the test ends.
func loopbackNode(t *testing.T, cfg Config, opts ...libp2p.Option) *testNode {
	t.Helper()
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(append([]libp2p.Option{libp2p.Identity(sk), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	d, err := New(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	raw, _ := sk.Raw()
	return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
}
