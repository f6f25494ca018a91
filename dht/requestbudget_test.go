package dht

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestSilentConnectionBounded: a storer that answered before and then
// stops answering on its open connection (as a peer killed while connected
// over QUIC does: nothing says it is gone) costs a publish its request
// budget from the latency measured, not RequestTimeout (10 minutes here,
// past the test's deadline), and it is forgotten.
func TestSilentConnectionBounded(t *testing.T) {
	clk := &clock{t: time.Now()}
	start := func() *testNode {
		t.Helper()
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := libp2p.New(libp2p.Identity(sk), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		d, err := New(h, Config{Mode: ModeServer, RequestTimeout: 10 * time.Minute, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		raw, _ := sk.Raw()
		return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
	}
	pub, live, mute := start(), start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, s := range []*testNode{live, mute} {
		if err := pub.host.Connect(ctx, peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	for pub.dht.TableSizes()["lan"] < 2 {
		if ctx.Err() != nil {
			t.Fatal("the storers never entered the routing table")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st, err := pub.dht.Publish(ctx, pub.record(t, "acme/mute", 1, clk.Now(), "127.0.0.1:9000")); err != nil || st.Stored != 2 {
		t.Fatalf("first publish: %+v, %v; want stored at both", st, err)
	}
	if pub.host.Peerstore().LatencyEWMA(mute.host.ID()) <= 0 {
		t.Fatal("no latency measured for the storer")
	}
	// The storer goes silent: it reads requests and never answers.
	mute.host.SetStreamHandler(ProtocolID, func(s network.Stream) { <-ctx.Done(); s.Reset() })

	st, err := pub.dht.Publish(ctx, pub.record(t, "acme/mute", 2, clk.Now(), "127.0.0.1:9000"))
	if ctx.Err() != nil {
		t.Fatal("the publish waited on the silent storer until the test's deadline")
	}
	if err != nil || st.Stored != 1 {
		t.Fatalf("publish beside a silent storer: %+v, %v; want stored at the live one", st, err)
	}
	if pub.dht.LAN().RoutingTable().Find(mute.host.ID()) != "" {
		t.Error("the silent storer is still in the routing table")
	}
}
