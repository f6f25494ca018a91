package node

import (
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// TestDialOfGonePeerIsCutShort: a peer whose process has exited refuses
// its TCP port, and that refusal ends the QUIC dial beside it with
// errPeerGone, long before the dial timeout (without goneDials the dial
// fails with the QUIC address's timeout after localDialTimeout). A second
// dial fails at once from the swarm's backoff.
func TestDialOfGonePeerIsCutShort(t *testing.T) {
	dialer, gone := startLoopbackHost(t, nil), startLoopbackHost(t, nil)
	dialer.Peerstore().AddAddrs(gone.ID(), gone.Addrs(), peerstore.TempAddrTTL)
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dialer.Network().DialPeer(ctx, gone.ID())
	if err == nil {
		t.Fatal("a dial of a closed host succeeded")
	}
	if !errors.Is(err, errPeerGone) {
		t.Fatalf("the QUIC dial was not cut short by the refused TCP dial: %v", err)
	}
	_, err = dialer.Network().DialPeer(ctx, gone.ID())
	if !errors.Is(err, swarm.ErrDialBackoff) {
		t.Fatalf("second dial: want the swarm's dial backoff, got %v", err)
	}
}

// TestRestartedPeerStillDialled: a peer that restarted on new ports is
// still known by its old addresses too; the old TCP port refuses, but the
// dial reaches the new process.
func TestRestartedPeerStillDialled(t *testing.T) {
	dialer, old := startLoopbackHost(t, nil), startLoopbackHost(t, nil)
	sk := old.Peerstore().PrivKey(old.ID())
	oldAddrs := old.Addrs()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := startLoopbackHost(t, sk)
	dialer.Peerstore().AddAddrs(old.ID(), oldAddrs, peerstore.TempAddrTTL)
	dialer.Peerstore().AddAddrs(old.ID(), restarted.Addrs(), peerstore.TempAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dialer.Network().DialPeer(ctx, restarted.ID()); err != nil {
		t.Fatalf("dial of a restarted peer: %v", err)
	}
}

// TestGoneNeedsEveryTCPAddress: a refusal of one of a peer's two TCP
// addresses on an IP does not cancel its QUIC dials there (it may have
// restarted on the other); a refusal of both does, only on that IP, and a
// QUIC dial that starts afterwards fails at once until goneFor has passed.
func TestGoneNeedsEveryTCPAddress(t *testing.T) {
	g := newGoneDials()
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	g.setPeerstore(ps)
	p := peer.ID("peer-a")
	t1 := ma.StringCast("/ip4/10.0.0.1/tcp/4001")
	t2 := ma.StringCast("/ip4/10.0.0.1/tcp/4002")
	q := ma.StringCast("/ip4/10.0.0.1/udp/4001/quic-v1")
	other := ma.StringCast("/ip4/10.0.0.2/udp/4001/quic-v1")
	ps.AddAddrs(p, []ma.Multiaddr{t1, t2, q, other, ma.StringCast("/ip4/10.0.0.1/tcp/4003/ws")}, peerstore.PermanentAddrTTL)

	dial := func(a ma.Multiaddr) (*bool, error) {
		k, _ := keyOf(p, a)
		cancelled := new(bool)
		_, err := g.startQUIC(k, func(cause error) { *cancelled = errors.Is(cause, errPeerGone) })
		return cancelled, err
	}
	onIP, err := dial(q)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := dial(other)
	if err != nil {
		t.Fatal(err)
	}
	g.tcpRefused(p, t1)
	if *onIP {
		t.Fatal("one refused TCP address of two cancelled the QUIC dial")
	}
	g.tcpRefused(p, t2)
	if !*onIP {
		t.Fatal("with every TCP address on the IP refused, the QUIC dial there went on")
	}
	if *elsewhere {
		t.Fatal("refusals on one IP cancelled a QUIC dial to another")
	}
	if _, err := dial(q); !errors.Is(err, errPeerGone) {
		t.Fatalf("a QUIC dial after the refusals: want errPeerGone, got %v", err)
	}
	now = now.Add(goneFor)
	if _, err := dial(q); err != nil {
		t.Fatalf("a QUIC dial goneFor after the refusals: %v", err)
	}
	if len(g.refused) != 0 {
		t.Fatalf("refusals kept after goneFor: %v", g.refused)
	}
}

// TestGoneTransportsKeepInterfaces: the wrapped transports offer every
// optional interface the swarm looks for that libp2p's own offer.
func TestGoneTransportsKeepInterfaces(t *testing.T) {
	h := startLoopbackHost(t, nil)
	sw, ok := h.Network().(*swarm.Swarm)
	if !ok {
		t.Fatalf("network is %T", h.Network())
	}
	optional := []reflect.Type{
		reflect.TypeFor[io.Closer](),
		reflect.TypeFor[transport.DialUpdater](),
		reflect.TypeFor[transport.Resolver](),
		reflect.TypeFor[transport.SkipResolver](),
		reflect.TypeFor[swarm.OrderedListener](),
	}
	var seen int
	for _, a := range []string{"/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"} {
		tpt := sw.TransportForDialing(ma.StringCast(a))
		var inner any
		switch w := tpt.(type) {
		case *goneTCP:
			inner = w.TcpTransport
		case *goneQUIC:
			inner = w.Transport
		default:
			t.Fatalf("%s: transport %T is not wrapped", a, tpt)
		}
		seen++
		for _, it := range optional {
			if reflect.TypeOf(inner).Implements(it) && !reflect.TypeOf(tpt).Implements(it) {
				t.Errorf("%T lost %v of %T", tpt, it, inner)
			}
		}
	}
	if seen != 2 {
		t.Fatalf("found %d wrapped transports, want 2 (TCP and QUIC)", seen)
	}
}

// TestPeerGoneAsksTheTCPPorts: PeerGone says a connected peer is gone
// only when every TCP address the peerstore holds for it on the IP it is
// connected on refuses a connect; a peer with no TCP address there, one
// with an address that accepts, and a peer with no connection are not gone.
func TestPeerGoneAsksTheTCPPorts(t *testing.T) {
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, g, err := newHost(sk, []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	// The peer listens on QUIC only, so that it is known by no TCP address
	// but those the test adds.
	other, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if g.PeerGone(ctx, other.ID()) {
		t.Fatal("a peer with no connection is gone")
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: other.ID(), Addrs: other.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if g.PeerGone(ctx, other.ID()) {
		t.Fatal("a peer known by no TCP address is gone")
	}
	closed := closedPort(t) // refuses connections
	h.Peerstore().AddAddr(other.ID(), closed, peerstore.TempAddrTTL)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	open, err := manet.FromNetAddr(ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	h.Peerstore().AddAddr(other.ID(), open, peerstore.TempAddrTTL)
	if g.PeerGone(ctx, other.ID()) {
		t.Fatal("a peer with a TCP address that accepts is gone")
	}
	ln.Close()
	if !g.PeerGone(ctx, other.ID()) {
		t.Fatal("a peer whose every TCP address on its IP refuses is not gone")
	}
	// The refusals count for its QUIC dials too.
	k, _ := keyOf(other.ID(), other.Addrs()[0])
	if _, err := g.startQUIC(k, func(error) {}); !errors.Is(err, errPeerGone) {
		t.Fatalf("a QUIC dial after PeerGone: want errPeerGone, got %v", err)
	}
}

// TestStoppedPeerLeavesRoutingTables: real nodes on loopback (TCP and
// QUIC, default DHT modes). A node that stops closes its connections; the
// others find its TCP port refusing and drop it from their routing tables
// at once (kad-dht alone keeps it until one of their queries to it fails,
// and meanwhile names it to every lookup), and a node that only lost a
// connection stays.
func TestStoppedPeerLeavesRoutingTables(t *testing.T) {
	start := func(boot []peer.AddrInfo) *Node { return startLoopbackNode(t, Config{}, boot) }
	boot := start(nil)
	info := []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host().Addrs()}}
	nodes := []*Node{start(info), start(info), start(info)}
	waitFor(t, "the bootstrap's LAN table holds every node", func() bool { return boot.DHT().TableSizes()["lan"] == len(nodes) })

	// A lost connection: the peer is alive, its port answers.
	if err := boot.Host().Network().ClosePeer(nodes[0].ID()); err != nil {
		t.Fatal(err)
	}
	// (Either side may dial again at once, and a peer connected again is
	// not checked.)
	waitFor(t, "the closed connection's peer checked or connected again", func() bool {
		return boot.DHT().Counters()["departure_checks"] >= 1 || boot.Host().Network().Connectedness(nodes[0].ID()) == network.Connected
	})
	time.Sleep(50 * time.Millisecond) // past a check's answer
	if n := boot.DHT().TableSizes()["lan"]; n != len(nodes) {
		t.Fatalf("after a connection to a live peer closed, the table holds %d peers, want %d", n, len(nodes))
	}

	if err := nodes[1].Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stopped node dropped from the bootstrap's table", func() bool { return boot.DHT().TableSizes()["lan"] == len(nodes)-1 })
	if n := boot.DHT().Counters()["peers_departed"]; n != 1 {
		t.Errorf("peers_departed %d, want 1", n)
	}
}
