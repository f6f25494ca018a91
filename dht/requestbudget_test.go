package dht

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestSilentConnectionBounded: a storer that answered before and then
// stops answering on its open connection (as a peer killed while connected
// over QUIC does: nothing says it is gone) costs a publish its request
// budget from the latency measured, not RequestTimeout (10 minutes here,
// past the test's deadline), and it is forgotten.
func TestSilentConnectionBounded(t *testing.T) {
	clk := &clock{t: time.Now()}
	start := func() *testNode {
		return loopbackNode(t, Config{Mode: ModeServer, RequestTimeout: 10 * time.Minute, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	}
	pub, live, mute := start(), start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connectStorers(t, pub, live, mute)
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

// freezer forwards TCP connections to target until frozen: then it stops
// moving bytes and keeps the sockets open, as a path to a dead host does.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for f.frozen.Load() {
				time.Sleep(10 * time.Millisecond) // hold the bytes: nothing gets through
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return f
}

// TestSilentLookupPeerForgotten: a peer whose connection goes silent after
// it answered (a host that died: nothing closes the connection) is
// forgotten by a lookup once kad-dht's query to it outlives the peer's
// request budget, instead of holding the lookup for kad-dht's 10 s read
// timeout.
func TestSilentLookupPeerForgotten(t *testing.T) {
	clk := &clock{t: time.Now()}
	pub, live, _, fz := frozenPeers(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := pub.dht.spaces[1]
	if _, err, _ := pub.dht.lookup(ctx, sp, record.Key("acme/frozen"), func(peer.ID) {}, nil, nil); err != nil {
		t.Fatalf("lookup before the freeze: %v", err)
	}
	fz.frozen.Store(true)
	peers, _, _ := pub.dht.lookup(ctx, sp, record.Key("acme/frozen2"), func(peer.ID) {}, nil, nil)
	if pub.dht.Counters()["lookup_silent_peers"] == 0 {
		t.Fatalf("the lookup did not forget the silent peer (closest %v; counters %v)", peers, pub.dht.Counters())
	}
	if !slices.Contains(peers, live.host.ID()) {
		t.Errorf("the lookup's closest peers %v lack the live peer", peers)
	}
}

// frozenPeers starts a node with cfg and two storers, connects it to the
// live one directly and to the other through a freezer, and waits until
// both are in its LAN table.
func frozenPeers(t *testing.T, cfg Config) (pub, live, mute *testNode, fz *freezer) {
	t.Helper()
	clk := &clock{t: time.Now()}
	pub = loopbackNode(t, cfg)
	start := func() *testNode {
		return loopbackNode(t, Config{Mode: ModeServer, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	}
	live, mute = start(), start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tcp, err := mute.host.Addrs()[0].ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	fz = newFreezer(t, "127.0.0.1:"+tcp)
	port := fz.ln.Addr().(*net.TCPAddr).Port
	if err := pub.host.Connect(ctx, peer.AddrInfo{ID: live.host.ID(), Addrs: live.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if err := pub.host.Connect(ctx, peer.AddrInfo{ID: mute.host.ID(), Addrs: []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))}}); err != nil {
		t.Fatal(err)
	}
	waitTable(t, pub, 2)
	return pub, live, mute, fz
}

// connectStorers connects pub to each of storers and waits until all are
// in its LAN table.
func connectStorers(t *testing.T, pub *testNode, storers ...*testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range storers {
		if err := pub.host.Connect(ctx, peer.AddrInfo{ID: s.host.ID(), Addrs: s.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	waitTable(t, pub, len(storers))
}

// waitTable waits (at most a minute) until pub's LAN table holds n peers.
func waitTable(t *testing.T, pub *testNode, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for pub.dht.TableSizes()["lan"] < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d peers never entered the routing table (it holds %d)", n, pub.dht.TableSizes()["lan"])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
