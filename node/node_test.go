package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// cluster is a bootstrap node and helpers to add nodes, all real libp2p
// hosts on loopback TCP.
type cluster struct {
	t       testing.TB
	boot    *Node
	runtime string
	now     func() time.Time
}

func newCluster(t testing.TB, now func() time.Time) *cluster {
	c := &cluster{t: t, runtime: t.TempDir(), now: now}
	c.boot = c.node(nil, "")
	return c
}

// node starts a DHT server node bootstrapped to the cluster's bootstrap
// node; runtime "" means the cluster's shared runtime directory.
func (c *cluster) node(boot []peer.AddrInfo, runtime string) *Node {
	c.t.Helper()
	if c.boot != nil && boot == nil {
		boot = []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}
	}
	if runtime == "" {
		runtime = c.runtime
	}
	n, err := New(Config{
		Home: c.t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot,
		RuntimeDir: runtime, DHT: dht.Config{Mode: dht.ModeServer}, Now: c.now,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { n.Close() })
	if boot != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			c.t.Fatal(err)
		}
	}
	return n
}

// service listens on a loopback port and accepts until the test ends.
func service(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAndClose(ln)
	return ln
}

// acceptAndClose accepts connections on ln and closes them, until ln closes:
// a service that answers health checks.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func announce(t *testing.T, n *Node, name, endpoint string) *Announcer {
	t.Helper()
	a, err := n.Announce(Announcement{Name: name, Endpoint: endpoint, CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first publish of "+name, func() bool { s := a.Status(); return s.Announcing && s.LastError == "" })
	return a
}

// freeze stops a's loop without a withdrawal, as a crash would.
func freeze(n *Node, a *Announcer) {
	a.halt()
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.T(t, what, cond)
}

func findPeers(t *testing.T, n *Node, name string) map[string]Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Find(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Instance{}
	for _, in := range res.Instances {
		m[in.Peer] = in
	}
	return m
}

// TestEndToEnd: a bootstrap node, three instances of one cell and one of
// another, and a finder (with a runtime directory of its own, so it can only
// learn of them through the DHT) that sees exactly the right instances,
// reachable and ranked.
func TestEndToEnd(t *testing.T) {
	c := newCluster(t, nil)
	want := map[string]bool{}
	for range 3 {
		n := c.node(nil, "")
		announce(t, n, "acme/exchange", service(t).Addr().String())
		want[n.ID().String()] = true
	}
	other := c.node(nil, "")
	announce(t, other, "acme/other", service(t).Addr().String())

	finder := c.node(nil, t.TempDir())
	got := findPeers(t, finder, "acme/exchange")
	if len(got) != 3 {
		t.Fatalf("found %d instances, want 3: %v", len(got), got)
	}
	for p, in := range got {
		if !want[p] || !in.Reachable || in.LatencyMS <= 0 || in.Expires.IsZero() {
			t.Fatalf("bad instance %+v", in)
		}
	}
	if o := findPeers(t, finder, "acme/other"); len(o) != 1 || o[other.ID().String()].Peer == "" {
		t.Fatalf("acme/other: %v", o)
	}
	if none := findPeers(t, finder, "acme/none"); len(none) != 0 {
		t.Fatalf("acme/none: %v", none)
	}

	// A stopped service (node alive) disappears within one check interval
	// plus propagation: the announcer publishes a withdrawal.
	ln := service(t)
	n4 := c.node(nil, "")
	announce(t, n4, "acme/exchange", ln.Addr().String())
	waitFor(t, "fourth instance", func() bool { return len(findPeers(t, finder, "acme/exchange")) == 4 })
	ln.Close()
	waitFor(t, "stopped service to disappear", func() bool {
		_, ok := findPeers(t, finder, "acme/exchange")[n4.ID().String()]
		return !ok
	})

	// A node's local API answers the same find as the node itself.
	cl, err := Dial(apiHome(t, c))
	if err != nil {
		t.Fatal(err)
	}
	viaAPI, err := cl.Find(context.Background(), "acme/exchange", FindOptions{})
	if err != nil || len(viaAPI.Instances) != 3 {
		t.Fatalf("find through the local API: %+v, %v", viaAPI, err)
	}
}

// apiHome starts a cluster node serving the local API and returns its home.
func apiHome(t *testing.T, c *cluster) string {
	home := t.TempDir()
	n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: true, RuntimeDir: t.TempDir(),
		Bootstrap: []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	return home
}

// TestKilledInstanceExpires: an instance that dies without withdrawing
// is returned until its record expires and never after 60 s + skew.
func TestKilledInstanceExpires(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := newCluster(t, clk.Now)
	victim := c.node(nil, "")
	survivor := c.node(nil, "")
	a := announce(t, victim, "acme/exchange", service(t).Addr().String())
	s := announce(t, survivor, "acme/exchange", service(t).Addr().String())
	finder := c.node(nil, t.TempDir())
	if got := findPeers(t, finder, "acme/exchange"); len(got) != 2 {
		t.Fatalf("before the kill: %d instances", len(got))
	}
	// Kill: stop the announcer without a withdrawal, then drop off the net.
	freeze(victim, a)
	victim.Close()
	// The survivor stays on the net but stops republishing: otherwise its
	// next health tick would see the jumped clock and publish a fresh record.
	freeze(survivor, s)

	clk.Add(record.MaxLifetime) // exactly at expiry: still within skew
	if _, ok := findPeers(t, finder, "acme/exchange")[victim.ID().String()]; !ok {
		t.Fatal("record gone before its expiry + skew")
	}
	clk.Add(record.MaxSkew + time.Millisecond)
	got := findPeers(t, finder, "acme/exchange")
	if _, ok := got[victim.ID().String()]; ok {
		t.Fatal("dead instance returned past 60 s + skew")
	}
	if len(got) != 0 { // the survivor's record is just as old: its clock froze too
		t.Fatalf("survivor's frozen record still returned: %v", got)
	}
}

func TestOfflineFindsLocalCells(t *testing.T) {
	runtime := t.TempDir()
	mk := func() *Node {
		n, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: runtime})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	runner := mk()
	if err := runner.Bootstrap(context.Background()); !errors.Is(err, ErrOffline) {
		t.Fatalf("Bootstrap with no peers: %v", err)
	}
	a, err := runner.Announce(Announcement{Name: "acme/local", Endpoint: service(t).Addr().String(), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publish attempt", func() bool { return a.Status().Publishes > 0 })
	if a.Status().LastError == "" {
		t.Fatal("offline publish reported no error")
	}
	res, err := mk().Find(context.Background(), "acme/local")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Offline || len(res.Instances) != 1 || !res.Instances[0].Reachable {
		t.Fatalf("offline find: %+v", res)
	}
	// Stopping withdraws the local registration too.
	a.Stop(context.Background())
	if cells := LocalCells(runtime); len(cells) != 0 {
		t.Fatalf("registration left behind: %+v", cells)
	}
}

func TestHome(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: true, RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(home)
	ki, _ := os.Stat(filepath.Join(home, KeyFile))
	if fi.Mode().Perm() != 0o700 || ki.Mode().Perm() != 0o600 {
		t.Fatalf("modes: home %v, key %v", fi.Mode().Perm(), ki.Mode().Perm())
	}
	id := n.ID()
	if _, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}}); !errors.Is(err, ErrHomeInUse) {
		t.Fatalf("second node on the same home: %v", err)
	}
	cl, err := Dial(home)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(context.Background())
	if err != nil || st.Peer != id.String() {
		t.Fatalf("status over the API: %+v, %v", st, err)
	}
	if _, err := cl.Find(context.Background(), "Bad", FindOptions{}); err == nil {
		t.Fatal("find of a bad name over the API succeeded")
	}
	n.Close()
	n.Close() // twice is fine
	if _, err := Dial(home); !errors.Is(err, ErrNoLocalNode) {
		t.Fatalf("Dial after Close: %v", err)
	}
	n2, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if n2.ID() != id {
		t.Fatal("identity not kept across restarts")
	}
	_ = os.Chmod(filepath.Join(home, KeyFile), 0o644)
	if _, err := LoadIdentity(home); err == nil {
		t.Fatal("world-readable key accepted")
	}
}

func TestSequencerNeverGoesBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	clk := &fakeClock{t: time.Now()}
	s, _ := NewSequencer(path, clk.Now)
	a, _ := s.Next()
	clk.Add(-time.Hour) // the clock jumps back, and the process restarts
	s2, err := NewSequencer(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s2.Next()
	if b <= a {
		t.Fatalf("sequence went back: %d then %d", a, b)
	}
	os.WriteFile(path, []byte("junk"), 0o600)
	if _, err := NewSequencer(path, clk.Now); err == nil {
		t.Fatal("corrupt sequence file accepted")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_, err = New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/" + port}})
	if err == nil {
		t.Fatal("listening on a port in use succeeded")
	}
	t.Log(err)
}

func TestEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		wild bool
	}{
		{"127.0.0.1:9000", true, false}, {":9000", true, true}, {"0.0.0.0:9000", true, true},
		{"[::]:9000", true, true}, {"unix:/tmp/x.sock", true, false}, {"unix:", false, false},
		{"9000", false, false}, {"host:", false, false}, {"host:0", false, false}, {"host:99999", false, false},
		{"unix:rel.sock", false, false}, {"a b:1", false, false}, {"[fe80::1%eth0]:80", false, false}, {"localhost:http", true, false},
	} {
		e, err := ParseEndpoint(tc.in)
		if (err == nil) != tc.ok || (err == nil && e.Wildcard() != tc.wild) {
			t.Errorf("ParseEndpoint(%q) = %+v, %v", tc.in, e, err)
		}
	}
}

func TestExpandWildcard(t *testing.T) {
	addrs := []ma.Multiaddr{
		ma.StringCast("/ip4/127.0.0.1/tcp/4001"),
		ma.StringCast("/ip4/192.168.1.7/tcp/4001"),
		ma.StringCast("/ip4/203.0.113.5/udp/4001/quic-v1"),
		ma.StringCast("/ip6/fe80::1/tcp/4001"),
		ma.StringCast("/ip6/2001:db8::5/tcp/4001"),
		ma.StringCast("/ip4/192.168.1.7/udp/4001/quic-v1"), // duplicate IP
	}
	for _, tc := range []struct {
		ep    string
		addrs []ma.Multiaddr
		want  []string
	}{
		{":9000", addrs, []string{"203.0.113.5:9000", "[2001:db8::5]:9000", "192.168.1.7:9000"}},
		{"0.0.0.0:9000", addrs[:1], []string{"127.0.0.1:9000"}},
		{"[::]:9000", nil, []string{"[::1]:9000"}},
		{"10.1.2.3:9000", addrs, []string{"10.1.2.3:9000"}},
		{"unix:/run/x.sock", addrs, []string{"unix:/run/x.sock"}},
	} {
		e, err := ParseEndpoint(tc.ep)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.expand(tc.addrs); !slices.Equal(got, tc.want) {
			t.Errorf("expand(%s) = %v, want %v", tc.ep, got, tc.want)
		}
	}
}
