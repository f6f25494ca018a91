package sim

import (
	"context"
	"errors"
	"fmt"
	"github.com/cellnode/cellnode/internal/poll"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testNetwork builds a network that the test closes when it ends.
func testNetwork(t *testing.T, ctx context.Context, sc Scenario) *Network {
	t.Helper()
	nw, err := New(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nw.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return nw
}

// found returns the peers of a find's instances.
func found(res *node.FindResult) map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, in := range res.Instances {
		m[peer.ID(mustDecode(in.Peer))] = true
	}
	return m
}

func mustDecode(s string) peer.ID {
	id, err := peer.Decode(s)
	if err != nil {
		panic(err)
	}
	return id
}

func peersOf(ins ...*Instance) map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, in := range ins {
		m[in.Peer] = true
	}
	return m
}

// findFrom finds name from node i and returns the peers found.
func findFrom(t *testing.T, ctx context.Context, nw *Network, i int, name string) map[peer.ID]bool {
	t.Helper()
	res, err := nw.Find(ctx, i, name)
	if err != nil {
		t.Fatalf("find %s from node %d: %v", name, i, err)
	}
	if res.Offline {
		t.Fatalf("find %s from node %d: offline", name, i)
	}
	return found(res)
}

// TestNetwork runs the real announcers and finds on one network of 40
// nodes: publish and find, an abrupt kill, a service that stops.
func TestNetwork(t *testing.T) {
	ctx := t.Context()
	nw := testNetwork(t, ctx, Scenario{Nodes: 40, BucketSize: 8, Latency: time.Millisecond, Seed: 3})
	if nw.Len() != 40 {
		t.Fatalf("%d nodes", nw.Len())
	}
	for i := range nw.Len() {
		if n := nw.Node(i).DHT().Kad().RoutingTable().Size(); n == 0 {
			t.Fatalf("node %d has an empty routing table", i)
		}
	}
	// announce starts the instances of name on the given nodes and waits
	// until each has published.
	announce := func(t *testing.T, name string, a node.Announcement, nodes ...int) []*Instance {
		t.Helper()
		a.Name = name
		var ins []*Instance
		for _, i := range nodes {
			in, err := nw.Announce(i, a)
			if err != nil {
				t.Fatal(err)
			}
			ins = append(ins, in)
		}
		for _, in := range ins {
			if err := in.WaitPublished(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return ins
	}
	fast := node.Announcement{CheckInterval: 100 * time.Millisecond}

	t.Run("publish and find", func(t *testing.T) {
		want := map[string]map[peer.ID]bool{}
		for c, nodes := range [][]int{{1, 2, 3}, {4, 5, 6}, {3, 7, 8}} {
			name := fmt.Sprintf("acme/svc-%d", c)
			want[name] = peersOf(announce(t, name, fast, nodes...)...)
		}
		for _, from := range []int{0, 9, 17, 25, 39} {
			for name, w := range want {
				res, err := nw.Find(ctx, from, name)
				if err != nil {
					t.Fatal(err)
				}
				if got := found(res); !maps.Equal(got, w) {
					t.Fatalf("node %d found %d instances of %s, want %d", from, len(got), name, len(w))
				}
				for _, in := range res.Instances {
					if !in.Reachable {
						t.Fatalf("node %d: instance %s of %s not reachable", from, in.Peer, name)
					}
				}
			}
		}
	})

	t.Run("killed node expires", func(t *testing.T) {
		// Short-lived records, so that expiry comes within the test:
		// live until Expires + record.MaxSkew, that is 3 s + 5 s.
		short := node.Announcement{CheckInterval: 100 * time.Millisecond, Republish: 500 * time.Millisecond, Lifetime: 3 * time.Second}
		ins := announce(t, "acme/short", short, 10, 11, 12)
		victim, rest := ins[0], peersOf(ins[1:]...)
		if err := nw.Kill(victim.Node); err != nil {
			t.Fatal(err)
		}
		if nw.Alive(victim.Node) {
			t.Fatal("killed node is alive")
		}
		if err := nw.Kill(victim.Node); err != nil {
			t.Fatalf("second kill: %v", err)
		}
		if _, err := nw.Find(ctx, victim.Node, "acme/short"); !errors.Is(err, ErrDead) {
			t.Fatalf("find from a dead node: %v", err)
		}
		// No withdrawal came: the victim's record is still served.
		if got := findFrom(t, ctx, nw, 20, "acme/short"); !got[victim.Peer] || len(got) != 3 {
			t.Fatalf("right after the kill: found %d instances, victim found %v", len(got), got[victim.Peer])
		}
		// Until its record expires; the others stay findable all along.
		// The network's clock moves a second at a time, each time once the
		// live announcers have republished.
		finders := []int{0, 20, 30}
		kill := nw.Clock().Now()
		for {
			nw.Clock().Advance(time.Second)
			now := nw.Clock().Now()
			for _, in := range ins[1:] {
				err := poll.Until(ctx, 10*time.Millisecond, func() bool { return !in.Announcer.Status().LastPublish.Before(now) })
				if err != nil {
					t.Fatalf("%s not republished: %v", in.Peer, err)
				}
			}
			gone := true
			for _, i := range finders {
				got := findFrom(t, ctx, nw, i, "acme/short")
				for p := range rest {
					if !got[p] {
						t.Fatalf("node %d lost live instance %s", i, p)
					}
				}
				gone = gone && !got[victim.Peer]
			}
			if gone {
				break
			}
			if since := nw.Clock().Now().Sub(kill); since > 3*time.Second+record.MaxSkew+time.Second {
				t.Fatalf("killed instance still found %v after the kill", since)
			}
		}
		if since := nw.Clock().Now().Sub(kill); since < 3*time.Second {
			t.Fatalf("killed instance gone %v after the kill, before its record expired", since)
		}
	})

	t.Run("stopped service withdrawn", func(t *testing.T) {
		// Records live 60 s: if the instance goes away within the test,
		// its withdrawal did it.
		ins := announce(t, "acme/stops", fast, 13, 14)
		if got := findFrom(t, ctx, nw, 21, "acme/stops"); !maps.Equal(got, peersOf(ins...)) {
			t.Fatalf("found %d instances before the stop", len(got))
		}
		ins[0].StopService()
		err := poll.Until(ctx, 50*time.Millisecond, func() bool {
			if ins[0].Announcer.Status().Announcing {
				return false
			}
			for _, i := range []int{21, 22} {
				if !maps.Equal(findFrom(t, ctx, nw, i, "acme/stops"), peersOf(ins[1])) {
					return false
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("stopped instance still found: %v (announcer %+v)", err, ins[0].Announcer.Status())
		}
	})
}

// TestSeed checks that the seed alone decides node identities.
func TestSeed(t *testing.T) {
	ctx := t.Context()
	ids := func(seed uint64) []peer.ID {
		nw := testNetwork(t, ctx, Scenario{Nodes: 4, InstancesPerCell: 1, Seed: seed})
		var out []peer.ID
		for i := range nw.Len() {
			out = append(out, nw.Node(i).ID())
		}
		return out
	}
	a, b, c := ids(5), ids(5), ids(6)
	if !slices.Equal(a, b) {
		t.Fatal("same seed, different identities")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same identities")
	}
}

func TestNewRejectsBadScenario(t *testing.T) {
	if _, err := New(context.Background(), Scenario{Nodes: -1}); !errors.Is(err, ErrBadScenario) {
		t.Fatalf("New: %v", err)
	}
	if _, err := Run(context.Background(), Scenario{Design: 9}); !errors.Is(err, ErrBadScenario) {
		t.Fatalf("Run: %v", err)
	}
}

func TestCloseTwice(t *testing.T) {
	nw, err := New(context.Background(), Scenario{Nodes: 3, InstancesPerCell: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Announce(1, node.Announcement{Name: "acme/x"}); err != nil {
		t.Fatal(err)
	}
	if err := nw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nw.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := nw.Announce(1, node.Announcement{Name: "acme/y"}); err == nil {
		t.Fatal("announce on a closed network")
	}
}
