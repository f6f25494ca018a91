package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// Issue 9's faults: a bootstrap address that never answers, a peer that
// accepts TCP and never speaks, a routing table full of dead peers, a LAN
// with no other node. Each must end in a clear message after a bounded
// wait. The hosts here are built with a transport dial timeout of ten
// minutes, so that a wait bounded only by the transport would outlive the
// test's deadline: what bounds each wait is the node's own budget.

// patientHost is a libp2p host on loopback TCP whose dials give up only
// after ten minutes.
func patientHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.SwarmOpts(swarm.WithDialTimeout(10*time.Minute), swarm.WithDialTimeoutLocal(10*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// mute listens on loopback TCP, accepts every connection and never says a
// word: a libp2p dial to it hangs in the security handshake.
func mute(t *testing.T) ma.Multiaddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ma.StringCast("/ip4/127.0.0.1/tcp/" + strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:"))
}

// mutePeer is a peer ID whose only address is a mute listener.
func mutePeer(t *testing.T) peer.AddrInfo {
	t.Helper()
	id, err := test.RandPeerID()
	if err != nil {
		t.Fatal(err)
	}
	return peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{mute(t)}}
}

// logBuffer is a *slog.Logger writing text into a buffer safe for
// concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestBootstrapNeverAnswers: a bootstrap peer that accepts TCP and never
// speaks costs Bootstrap one bootstrap dial budget, not the transport's ten
// minutes, and the error says the node is offline and why: the peer, and
// that its dial timed out.
func TestBootstrapNeverAnswers(t *testing.T) {
	silent := mutePeer(t)
	n, err := New(Config{Host: patientHost(t), NoRuntimeDir: true, Bootstrap: []peer.AddrInfo{silent}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = n.Bootstrap(ctx)
	if ctx.Err() != nil {
		t.Fatal("Bootstrap waited on the silent bootstrap peer until the test's deadline")
	}
	if !errors.Is(err, ErrOffline) || !errors.Is(err, bootstrap.ErrNoPeers) {
		t.Fatalf("err = %v, want ErrOffline wrapping bootstrap.ErrNoPeers", err)
	}
	for _, want := range []string{"offline", silent.ID.String(), "timed out"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestPeersSeenBeforeAllSilent: with the bootstrap peer gone and every
// peer of peers.json mute, Bootstrap ends offline within its dial budget,
// naming the peers.
func TestPeersSeenBeforeAllSilent(t *testing.T) {
	home := t.TempDir()
	var known []peer.AddrInfo
	for range 4 {
		known = append(known, mutePeer(t))
	}
	if err := bootstrap.NewStore(home + "/" + PeersFile).Save(known); err != nil {
		t.Fatal(err)
	}
	goneID, err := test.RandPeerID()
	if err != nil {
		t.Fatal(err)
	}
	gone := peer.AddrInfo{ID: goneID, Addrs: []ma.Multiaddr{closedPort(t)}}
	n, err := New(Config{Home: home, Host: patientHost(t), NoRuntimeDir: true, Bootstrap: []peer.AddrInfo{gone}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = n.Bootstrap(ctx)
	if ctx.Err() != nil {
		t.Fatal("Bootstrap waited on the silent peers until the test's deadline")
	}
	if !errors.Is(err, ErrOffline) {
		t.Fatalf("err = %v, want ErrOffline", err)
	}
	for _, p := range append(known, gone) {
		if !strings.Contains(err.Error(), p.ID.String()) {
			t.Errorf("error %q does not name %s", err, p.ID)
		}
	}
}

// closedPort is a loopback TCP address nothing listens on.
func closedPort(t *testing.T) ma.Multiaddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ma.StringCast("/ip4/127.0.0.1/tcp/" + strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:"))
	ln.Close()
	return a
}

// TestTableOfSilentPeers: a finder and an announcer whose routing tables
// hold one live peer and a dozen that accept TCP and never speak (dead
// hosts whose kernel still answers) find and publish through the live one,
// within the DHT's dial budget, and the silent peers leave the tables.
func TestTableOfSilentPeers(t *testing.T) {
	storer, err := New(Config{Host: patientHost(t), NoRuntimeDir: true, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storer.Close() })
	boot := []peer.AddrInfo{{ID: storer.ID(), Addrs: storer.Host().Addrs()}}
	start := func(mode dht.Mode, log *slog.Logger) *Node {
		t.Helper()
		n, err := New(Config{Host: patientHost(t), NoRuntimeDir: true, Bootstrap: boot, Logger: log,
			DHT: dht.Config{Mode: mode, DisableAutoRefresh: true}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	plant := func(n *Node) []peer.ID {
		t.Helper()
		var dead []peer.ID
		for range 12 {
			p := mutePeer(t)
			n.Host().Peerstore().AddAddrs(p.ID, p.Addrs, peerstore.PermanentAddrTTL)
			if ok, err := n.DHT().LAN().RoutingTable().TryAddPeer(p.ID, true, false); !ok || err != nil {
				t.Fatalf("could not plant a silent peer: %v", err)
			}
			dead = append(dead, p.ID)
		}
		return dead
	}
	pub, finder := start(dht.ModeServer, nil), start(dht.ModeClient, nil)
	deadPub, deadFinder := plant(pub), plant(finder)

	ln := service(t)
	a, err := pub.Announce(Announcement{Name: "acme/silent", Endpoint: ln.Addr().String(), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publish through the live storer", func() bool { return a.Status().StoredAt >= 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := finder.Find(ctx, "acme/silent")
	if ctx.Err() != nil {
		t.Fatal("the find waited on the silent peers until the test's deadline")
	}
	if err != nil || len(res.Instances) != 1 || res.Instances[0].Peer != pub.ID().String() {
		t.Fatalf("find through a table of silent peers: %+v, %v; want the one instance", res, err)
	}
	for _, c := range []struct {
		n    *Node
		dead []peer.ID
	}{{pub, deadPub}, {finder, deadFinder}} {
		for _, id := range c.dead {
			if c.n.DHT().LAN().RoutingTable().Find(id) != "" {
				t.Errorf("silent peer %s still in a routing table after the lookup", id)
			}
		}
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatalf("withdrawal with silent peers about: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the withdrawal waited on the silent peers until the test's deadline")
	}
}

// TestAloneOnTheLAN: a node with no bootstrap peer and no peer seen before
// (the only node on its network) is offline at once with a message saying
// so; a cell it announces is visible on this machine, and the announcer
// warns that its records reach no remote peer and says it in its status.
func TestAloneOnTheLAN(t *testing.T) {
	logs := &logBuffer{}
	runtime := t.TempDir()
	n, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: runtime, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	err = n.Bootstrap(context.Background())
	if !errors.Is(err, ErrOffline) || !strings.Contains(err.Error(), "no bootstrap peers configured") {
		t.Fatalf("Bootstrap alone: %v, want ErrOffline saying no bootstrap peers are configured", err)
	}
	ln := service(t)
	a, err := n.Announce(Announcement{Name: "acme/alone", Endpoint: ln.Addr().String(), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed publish", func() bool { return a.Status().Failures > 0 })
	if s := a.Status(); !strings.Contains(s.LastError, "no remote peer") && !strings.Contains(s.LastError, "no DHT server") {
		t.Errorf("status after a publish alone: last error %q, want it to say no remote peer took the record", s.LastError)
	}
	waitFor(t, "the warning", func() bool { return strings.Contains(logs.String(), "records reach no remote peer") })
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("the no-remote-peer message is not a warning:\n%s", logs)
	}

	// A finder on the same machine, also alone: offline, the local cell only.
	f, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: runtime})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := f.Find(ctx, "acme/alone")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Offline || len(res.Instances) != 1 || res.Instances[0].Peer != n.ID().String() {
		t.Fatalf("find alone: offline %v, %d instances; want offline with the local instance", res.Offline, len(res.Instances))
	}
}

// TestRejoinAfterFailedBootstrap: a node whose bootstrap peer did not
// answer when it started (here: its address refused connections) is back on
// the network at its next publish once the peer answers, not when
// kad-dht's own retry of the bootstrap peers comes round (every 2 minutes,
// past this test's 30 s wait).
func TestRejoinAfterFailedBootstrap(t *testing.T) {
	c := newCluster(t, nil)
	// The bootstrap peer's address is a port that refuses connections until
	// a forwarder to the bootstrap node starts listening on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	target := ""
	for _, a := range c.boot.Host().Addrs() {
		if ip, err := a.ValueForProtocol(ma.P_IP4); err == nil && ip == "127.0.0.1" {
			p, _ := a.ValueForProtocol(ma.P_TCP)
			target = "127.0.0.1:" + p
		}
	}
	boot := peer.AddrInfo{ID: c.boot.ID(), Addrs: []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))}}
	n, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: t.TempDir(),
		Bootstrap: []peer.AddrInfo{boot}, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Bootstrap(context.Background()); !errors.Is(err, ErrOffline) {
		t.Fatalf("Bootstrap with the bootstrap peer down: %v, want ErrOffline", err)
	}
	a, err := n.Announce(Announcement{Name: "acme/rejoin", Endpoint: service(t).Addr().String(), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed publish", func() bool { return a.Status().Failures > 0 })

	fwd, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Skipf("the bootstrap peer's port was taken meanwhile: %v", err)
	}
	t.Cleanup(func() { fwd.Close() })
	go forward(fwd, target)
	waitFor(t, "a publish stored at the bootstrap node", func() bool { return a.Status().StoredAt > 0 })
}

// forward accepts connections on ln and pipes each to target, until ln
// closes.
func forward(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() { io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
			io.Copy(c, u)
		}()
	}
}

// TestCloseRemembersPeers: a one-shot node's Close writes the peers its
// routing table holds to peers.json (while the DHT and host stop), so the
// next one-shot command from that home can start from them.
func TestCloseRemembersPeers(t *testing.T) {
	boot, err := New(Config{Home: t.TempDir(), NoRuntimeDir: true, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { boot.Close() })
	home := t.TempDir()
	n, err := New(Config{Home: home, NoRuntimeDir: true, Ephemeral: true, Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host().Addrs()}}, DHT: dht.Config{Mode: dht.ModeClient}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := bootstrap.NewStore(filepath.Join(home, PeersFile)).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != boot.ID() || len(got[0].Addrs) == 0 {
		t.Fatalf("peers.json after Close = %v, want the bootstrap node %s with its addresses", got, boot.ID())
	}
}

// TestCloseAtExit: a one-shot node's CloseAtExit saves its peers and
// closes its connections (a QUIC one here, whose peer would otherwise
// keep it until the idle timeout), without the rest of Close; Close after
// it does nothing. A node with a home of its own (not Ephemeral) gets the
// full Close: its home is free again.
func TestCloseAtExit(t *testing.T) {
	quic := []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	boot, err := New(Config{Home: t.TempDir(), NoRuntimeDir: true, Listen: quic, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { boot.Close() })
	bootInfo := []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host().Addrs()}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	home := t.TempDir()
	n, err := New(Config{Home: home, NoRuntimeDir: true, Ephemeral: true, Listen: quic,
		Bootstrap: bootInfo, DHT: dht.Config{Mode: dht.ModeClient}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.host.Close(); n.dht.Close() }) // what the exit would end
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	// Bootstrap returns once the one-shot node's side of the handshake is
	// done; the bootstrap node's side ends half a round trip later.
	poll.T(t, "the bootstrap node's connection from the one-shot node", func() bool {
		return len(boot.Host().Network().ConnsToPeer(n.ID())) > 0
	})
	if err := n.CloseAtExit(); err != nil {
		t.Fatal(err)
	}
	got, err := bootstrap.NewStore(filepath.Join(home, PeersFile)).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != boot.ID() {
		t.Fatalf("peers.json after CloseAtExit = %v, want the bootstrap node %s", got, boot.ID())
	}
	for deadline := time.Now().Add(3 * time.Second); len(boot.Host().Network().ConnsToPeer(n.ID())) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("3 s after CloseAtExit the bootstrap node still holds the one-shot node's connection")
		}
	}
	if _, err := n.Announce(Announcement{Name: "acme/x", Endpoint: "127.0.0.1:1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Announce after CloseAtExit = %v, want ErrClosed", err)
	}
	if err := n.Close(); err != nil { // a no-op
		t.Fatal(err)
	}

	home2 := t.TempDir()
	full, err := New(Config{Home: home2, NoRuntimeDir: true, Listen: quic, DHT: dht.Config{Mode: dht.ModeClient}})
	if err != nil {
		t.Fatal(err)
	}
	if err := full.CloseAtExit(); err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Home: home2, NoRuntimeDir: true, Listen: quic, DHT: dht.Config{Mode: dht.ModeClient}})
	if err != nil {
		t.Fatalf("a node with its own home after CloseAtExit: %v (want the home unlocked by a full Close)", err)
	}
	again.Close()
}
