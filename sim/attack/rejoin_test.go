package attack

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

// loopbackNode starts a real node (libp2p over TCP on 127.0.0.1) with its
// state in home, closed when the test ends.
func loopbackNode(t *testing.T, home string, boot []peer.AddrInfo) *node.Node {
	t.Helper()
	n, err := node.New(node.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot,
		NoRuntimeDir: true, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestAttackRejoin: with the bootstrap node gone, a node that restarts
// rejoins through the peers it saw before (peers.json in its home) and
// finds a cell; a node that has never seen anyone cannot, and says so.
// Real libp2p hosts on the loopback interface, since the simulator's nodes
// keep no state on disk.
func TestAttackRejoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := loopbackNode(t, t.TempDir(), nil)
	boot := []peer.AddrInfo{{ID: b.ID(), Addrs: b.Host().Addrs()}}

	homes := make([]string, 4)
	nodes := make([]*node.Node, 4)
	var justBootstrapped []byte // node 0's peers.json right after its first bootstrap, when only b was there
	for i := range nodes {
		homes[i] = t.TempDir()
		nodes[i] = loopbackNode(t, homes[i], boot)
		if err := nodes[i].Bootstrap(ctx); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if i == 0 {
			// Bootstrap saves the peers in the background, first the
			// ones it connected to, then the refreshed table.
			path := filepath.Join(homes[i], node.PeersFile)
			if err := poll.Until(ctx, 5*time.Millisecond, func() bool { _, err := os.Stat(path); return err == nil }); err != nil {
				t.Fatalf("no %s after the first bootstrap: %v", path, err)
			}
			var err error
			if justBootstrapped, err = os.ReadFile(path); err != nil {
				t.Fatal(err)
			}
		}
	}
	// kad-dht's own bootstrap fills the routing tables through b.
	for i, n := range nodes {
		if err := poll.Until(ctx, 20*time.Millisecond, func() bool { return len(n.DHT().Peers()) >= 3 }); err != nil {
			t.Fatalf("node %d: routing tables of %d peers: %v", i, len(n.DHT().Peers()), err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serve(ln)
	an, err := nodes[0].Announce(node.Announcement{Name: "acme/rejoin", Endpoint: ln.Addr().String(), CheckInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool { s := an.Status(); return s.Announcing && s.StoredAt > 0 }); err != nil {
		t.Fatalf("not published: %+v", an.Status())
	}

	// The bootstrap node goes away; node 3 restarts with the same home.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[3].Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	again := loopbackNode(t, homes[3], boot)
	if err := again.Bootstrap(ctx); err != nil {
		t.Fatalf("restart without the bootstrap node: %v", err)
	}
	res, err := again.Find(ctx, "acme/rejoin")
	if err != nil || len(res.Instances) != 1 {
		t.Fatalf("find after rejoining: %v, %+v", err, res)
	}
	t.Logf("restarted node rejoined through peers seen before and found the cell in %v", time.Since(start).Round(time.Millisecond))
	again.Close()

	// A node that crashed right after its first bootstrap saved only the
	// bootstrap node: it cannot rejoin without it.
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, node.PeersFile), justBootstrapped, 0o600); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	err = loopbackNode(t, crashed, boot).Bootstrap(cctx)
	if err == nil {
		t.Log("a node that crashed right after bootstrapping rejoined too")
	} else if errors.Is(err, node.ErrOffline) {
		weakness(t, "a node that crashed right after its first bootstrap cannot rejoin without the bootstrap node: "+
			"peers.json is written on bootstrap and on close only (%v)", err)
	} else {
		t.Fatal(err)
	}

	// A node that never saw anyone says it is offline.
	if err := loopbackNode(t, t.TempDir(), boot).Bootstrap(cctx); !errors.Is(err, node.ErrOffline) {
		t.Fatalf("new node without a bootstrap node: %v, want ErrOffline", err)
	}
}

// serve accepts connections on ln and closes them, until ln is closed.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
