package dht

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// leftStub is a Config.PeerLeft that answers from a set of peers said to
// be gone, and counts its calls by peer.
type leftStub struct {
	mu    sync.Mutex
	gone  map[peer.ID]bool
	calls map[peer.ID]int
	from  map[peer.ID]ma.Multiaddr
}

func newLeftStub() *leftStub {
	return &leftStub{gone: map[peer.ID]bool{}, calls: map[peer.ID]int{}, from: map[peer.ID]ma.Multiaddr{}}
}

func (s *leftStub) left(_ context.Context, p peer.ID, from ma.Multiaddr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[p]++
	s.from[p] = from
	return s.gone[p]
}

func (s *leftStub) setGone(p peer.ID) {
	s.mu.Lock()
	s.gone[p] = true
	s.mu.Unlock()
}

func (s *leftStub) called(p peer.ID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[p]
}

// TestDepartedPeerLeavesTheTable: a peer of the routing table whose
// connections close, and whose process PeerLeft finds gone, leaves the
// table at once (kad-dht alone keeps it until a query to it fails), and is
// no longer named to a lookup; the check is given the closed connection's
// address.
func TestDepartedPeerLeavesTheTable(t *testing.T) {
	clk := &clock{t: time.Now()}
	stub := newLeftStub()
	nodes, mn := testMocknet(t, 4, clk, func(c *Config) { c.PeerLeft = stub.left })
	watcher, leaver := nodes[0], nodes[2]
	if watcher.dht.Kad().RoutingTable().Find(leaver.host.ID()) == "" {
		t.Fatal("the leaver is not in the watcher's table to begin with")
	}
	stub.setGone(leaver.host.ID())
	if err := leaver.dht.Close(); err != nil {
		t.Fatal(err)
	}
	if err := leaver.host.Close(); err != nil {
		t.Fatal(err)
	}
	poll.T(t, "the leaver dropped from every table", func() bool {
		for _, nd := range nodes {
			if nd != leaver && nd.dht.Kad().RoutingTable().Find(leaver.host.ID()) != "" {
				return false
			}
		}
		return true
	})
	if n := watcher.dht.Counters()["peers_departed"]; n == 0 {
		t.Error("peers_departed not counted")
	}
	stub.mu.Lock()
	from := stub.from[leaver.host.ID()]
	stub.mu.Unlock()
	if from == nil || !from.Equal(mn.Host(leaver.host.ID()).Addrs()[0]) {
		t.Errorf("checked at %v, want the leaver's address %v", from, mn.Host(leaver.host.ID()).Addrs())
	}
	// A lookup: no node names it any more.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closest, err := nodes[1].dht.Kad().GetClosestPeers(ctx, setKey("acme/any", nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range closest {
		if p == leaver.host.ID() {
			t.Fatalf("a lookup still returns the peer that left: %v", closest)
		}
	}
}

// TestDisconnectedLivePeerStays: a peer whose connection closes but whose
// process PeerLeft does not find gone (a connection trimmed, a link down)
// stays in the table; so does one that reconnects before the check.
func TestDisconnectedLivePeerStays(t *testing.T) {
	clk := &clock{t: time.Now()}
	stub := newLeftStub()
	nodes, mn := testMocknet(t, 4, clk, func(c *Config) { c.PeerLeft = stub.left })
	watcher, live := nodes[0], nodes[3]
	// Unlinked first, so that nothing dials it again before the check (a
	// peer that reconnects is not checked at all).
	if err := mn.UnlinkPeers(watcher.host.ID(), live.host.ID()); err != nil {
		t.Fatal(err)
	}
	if err := mn.DisconnectPeers(watcher.host.ID(), live.host.ID()); err != nil {
		t.Fatal(err)
	}
	poll.T(t, "the live peer checked", func() bool { return stub.called(live.host.ID()) > 0 })
	time.Sleep(50 * time.Millisecond) // past the check's answer
	if watcher.dht.Kad().RoutingTable().Find(live.host.ID()) == "" {
		t.Fatal("a live peer was dropped from the table after a disconnect")
	}
	if n := watcher.dht.Counters()["peers_departed"]; n != 0 {
		t.Errorf("peers_departed %d, want 0", n)
	}
}

// TestDepartureCheckedOncePerPeer: while a peer's check runs, more closed
// connections of it start no other check, and the checks stop with the
// node: Close returns with none left running.
func TestDepartureCheckedOncePerPeer(t *testing.T) {
	clk := &clock{t: time.Now()}
	stub := newLeftStub()
	nodes, mn := testMocknet(t, 3, clk, func(c *Config) { c.PeerLeft = stub.left })
	watcher, other := nodes[0], nodes[1]
	for range 5 {
		_ = mn.DisconnectPeers(watcher.host.ID(), other.host.ID())
		if _, err := mn.ConnectPeers(watcher.host.ID(), other.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if err := mn.UnlinkPeers(watcher.host.ID(), other.host.ID()); err != nil {
		t.Fatal(err)
	}
	_ = mn.DisconnectPeers(watcher.host.ID(), other.host.ID())
	poll.T(t, "a check", func() bool { return stub.called(other.host.ID()) > 0 })
	time.Sleep(2 * leftDelay)
	if n := stub.called(other.host.ID()); n != 1 {
		t.Errorf("%d checks for one peer's burst of closed connections, want 1", n)
	}
	// A close followed by the node's own Close: the check waiting out
	// leftDelay ends with the node.
	if _, err := mn.LinkPeers(watcher.host.ID(), other.host.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := mn.ConnectPeers(watcher.host.ID(), other.host.ID()); err != nil {
		t.Fatal(err)
	}
	_ = mn.DisconnectPeers(watcher.host.ID(), other.host.ID())
	done := make(chan struct{})
	go func() { watcher.dht.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited on a departure check")
	}
}
