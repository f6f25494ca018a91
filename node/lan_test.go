package node

import (
	"context"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestNoSpecialNodeOnLoopback: with default flags (DHT auto mode) on a
// network with no public address, every node serves the LAN DHT, records
// are stored at many peers, and once the bootstrap node is gone every
// instance stays findable through the survivors, across a record's whole
// life (the clock moves past every record's expiry, so only republishes
// that reached survivors count).
func TestNoSpecialNodeOnLoopback(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	start := func(mode dht.Mode, boot []peer.AddrInfo) *Node {
		t.Helper()
		return startLoopbackNode(t, Config{DHT: dht.Config{Mode: mode}, Now: clk.Now}, boot)
	}
	boot := start(dht.ModeServer, nil) // as `cellnode bootstrap` runs
	bootInfo := []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host().Addrs()}}
	const cells = 6
	var nodes []*Node
	var ans []*Announcer
	for range cells {
		n := start(dht.ModeAuto, bootInfo) // the default of `cellnode run`
		if m := n.DHT().Modes(); m["lan"] != "server" || m["wan"] != "client" {
			t.Fatalf("modes with default flags on loopback: %v, want the LAN DHT served", m)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		ans = append(ans, announce(t, n, "acme/lan", service(t).Addr().String()))
	}
	waitFor(t, "records stored at more than one peer", func() bool {
		for _, a := range ans {
			if a.Status().StoredAt < 2 {
				return false
			}
		}
		return true
	})
	holders := 0
	for _, n := range nodes {
		if len(n.DHT().Store().GetFor("acme/lan", nil)) > 0 {
			holders++
		}
	}
	if holders < 3 {
		t.Fatalf("only %d of %d cell nodes store the name's set", holders, cells)
	}

	// The bootstrap node goes away; records expire and are republished.
	if err := boot.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Add(record.MaxLifetime + time.Second)
	finder := start(dht.ModeClient, []peer.AddrInfo{{ID: nodes[0].ID(), Addrs: nodes[0].Host().Addrs()}})
	waitFor(t, "every instance findable without the bootstrap node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := finder.Find(ctx, "acme/lan")
		return err == nil && len(res.Instances) == cells
	})
}

// startLoopbackNode starts a node as `cellnode run` would, on loopback TCP
// and QUIC, with cfg's other fields, a home and a runtime directory of its
// own (nothing is learnt through this machine's registry of local cells),
// and bootstrapped from boot when boot is not nil.
func startLoopbackNode(t *testing.T, cfg Config, boot []peer.AddrInfo) *Node {
	t.Helper()
	cfg.Home, cfg.RuntimeDir, cfg.Bootstrap = t.TempDir(), t.TempDir(), boot
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if boot != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
