package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"github.com/cellnode/cellnode/internal/poll"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// TestDualSpaces: one node sees public peers (its WAN DHT) and private peers
// (its LAN DHT). What it publishes reaches both, so a finder that knows
// only public peers and one that knows only private peers both find it;
// and each DHT speaks its own protocol.
func TestDualSpaces(t *testing.T) {
	clk := &clock{t: time.Now()}
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	start := func(addr string, mode Mode) *testNode {
		t.Helper()
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast(addr))
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(h, Config{Mode: mode, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		raw, _ := sk.Raw()
		return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
	}
	var public, private []*testNode
	for i := range 5 {
		// Each public peer in a /16 of its own, so diversity keeps them all.
		public = append(public, start(fmt.Sprintf("/ip4/%d.1.0.1/tcp/4001", 20+i), ModeServer))
		private = append(private, start(fmt.Sprintf("/ip4/10.0.0.%d/tcp/4001", 10+i), ModeAuto))
	}
	both := start("/ip4/19.1.0.1/tcp/4001", ModeServer)
	wanFinder := start("/ip4/30.1.0.1/tcp/4001", ModeClient)
	lanFinder := start("/ip4/10.0.0.99/tcp/4001", ModeClient)
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(a *testNode, bs ...*testNode) {
		t.Helper()
		for _, b := range bs {
			if a == b {
				continue
			}
			if err := a.host.Connect(ctx, peer.AddrInfo{ID: b.host.ID()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range public {
		connect(n, public...)
	}
	for _, n := range private {
		connect(n, private...)
	}
	connect(both, append(public, private...)...)
	connect(wanFinder, public...)
	connect(lanFinder, private...)

	waitTables := func(n *testNode, wan, lan int) {
		t.Helper()
		poll.T(t, fmt.Sprintf("routing tables with wan ≥ %d, lan ≥ %d peers", wan, lan), func() bool {
			s := n.dht.TableSizes()
			return s["wan"] >= wan && s["lan"] >= lan
		})
	}
	waitTables(both, 3, 3)
	waitTables(wanFinder, 3, 0)
	waitTables(lanFinder, 0, 3)
	if s := wanFinder.dht.TableSizes(); s["lan"] != 0 {
		t.Fatalf("a finder with only public peers has LAN peers: %v", s)
	}
	if m := private[0].dht.Modes(); m["lan"] != "server" || m["wan"] != "client" {
		t.Fatalf("a private peer in auto mode: %v, want it serving the LAN DHT only", m)
	}

	r := both.record(t, "acme/dual", 1, clk.Now(), "10.0.0.1:9000")
	st, err := both.dht.Publish(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if st.Stored < 2 {
		t.Fatalf("stored at %d peers: %+v", st.Stored, st)
	}
	for name, f := range map[string]*testNode{"wan": wanFinder, "lan": lanFinder} {
		recs, _, err := f.dht.Find(ctx, "acme/dual", nil, clk.Now)
		if err != nil {
			t.Fatalf("%s finder: %v", name, err)
		}
		if len(recs) != 1 || recs[0].Peer != both.host.ID() {
			t.Fatalf("%s finder found %d records, want the one published", name, len(recs))
		}
	}
}
