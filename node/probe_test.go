package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// signed returns a record of name signed by priv (a fresh key if nil).
func signed(t testing.TB, priv ed25519.PrivateKey, name string, seq uint64, now time.Time, endpoints ...string) *record.Record {
	t.Helper()
	if priv == nil {
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	}
	r, err := record.Sign(priv, record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey), Endpoints: endpoints,
		Seq: seq, Issued: now, Expires: now.Add(record.MaxLifetime)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// probeNode is a node with no peers and no state on disk; its runtime
// directory is its own.
func probeNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	cfg.Ephemeral = true
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = t.TempDir()
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// fakeDialer stands in for the network in probes: endpoints in dead
// never answer (the dial waits for its context), the others connect.
// Dials wait on block, when not nil, before connecting.
type fakeDialer struct {
	mu       sync.Mutex
	calls    map[string]int
	dead     map[string]bool
	block    chan struct{}
	inFlight atomic.Int32
	most     atomic.Int32
}

func (f *fakeDialer) dial(ctx context.Context, network, addr string, _ bool) (net.Conn, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[addr]++
	dead := f.dead[addr]
	f.mu.Unlock()
	in := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.most.Load(); in > m && !f.most.CompareAndSwap(m, in); m = f.most.Load() {
	}
	if dead {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (f *fakeDialer) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[addr]
}

func (f *fakeDialer) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		n += c
	}
	return n
}

// TestFindRemembersUnreachable: a find of a cell with one crashed instance
// pays for its probe once; finds in the next UnreachableFor skip it and
// say so, until the time passes or the instance publishes anew.
func TestFindRemembersUnreachable(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	n := probeNode(t, Config{Now: clk.Now})
	f := &fakeDialer{dead: map[string]bool{"192.0.2.1:9000": true}}
	n.probes.dial, n.probes.timeout = f.dial, 50*time.Millisecond
	_, crashedKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, r := range []*record.Record{
		signed(t, crashedKey, "acme/x", 1, clk.Now(), "192.0.2.1:9000"),
		signed(t, nil, "acme/x", 1, clk.Now(), "192.0.2.2:9000"),
	} {
		if _, err := n.DHT().Store().Put("acme/x", r.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	find := func() (dead, live Instance) {
		t.Helper()
		res, err := n.Find(context.Background(), "acme/x")
		if err != nil || len(res.Instances) != 2 {
			t.Fatalf("find: %+v, %v", res, err)
		}
		live, dead = res.Instances[0], res.Instances[1]
		if !live.Reachable || dead.Reachable || live.Endpoints[0] != "192.0.2.2:9000" {
			t.Fatalf("ranking: %+v", res.Instances)
		}
		return dead, live
	}
	dead, _ := find()
	if got := f.count("192.0.2.1:9000"); got != 1 || !strings.Contains(dead.Probe["192.0.2.1:9000"], "no answer within") {
		t.Fatalf("first find: %d dials of the dead endpoint, probe %q", got, dead.Probe)
	}
	clk.Add(UnreachableFor - time.Second)
	dead, _ = find()
	if got := f.count("192.0.2.1:9000"); got != 1 || !strings.HasPrefix(dead.Probe["192.0.2.1:9000"], "skipped: unreachable 29s ago") {
		t.Fatalf("second find: %d dials of the dead endpoint, probe %q", got, dead.Probe)
	}
	if got := f.count("192.0.2.2:9000"); got != 2 {
		t.Fatalf("the live endpoint was dialled %d times in 2 finds", got)
	}
	clk.Add(time.Second)
	find()
	if got := f.count("192.0.2.1:9000"); got != 2 {
		t.Fatalf("after %v: %d dials of the dead endpoint, want 2", UnreachableFor, got)
	}
	// A newer record of the instance (it restarted) is probed at once.
	if _, err := n.DHT().Store().Put("acme/x", signed(t, crashedKey, "acme/x", 2, clk.Now(), "192.0.2.1:9000").Bytes()); err != nil {
		t.Fatal(err)
	}
	find()
	if got := f.count("192.0.2.1:9000"); got != 3 {
		t.Fatalf("after a newer record: %d dials of the dead endpoint, want 3", got)
	}
}

// TestFindCrashedInstanceProbedOnce is the same through the DHT: one of
// two instances crashes (its announcer stops without a withdrawal, its
// service is gone); the first find dials its endpoint, the next does not.
func TestFindCrashedInstanceProbedOnce(t *testing.T) {
	c := newCluster(t, nil)
	victim, survivor := c.node(nil, ""), c.node(nil, "")
	vln, sln := service(t), service(t)
	va := announce(t, victim, "acme/exchange", vln.Addr().String())
	announce(t, survivor, "acme/exchange", sln.Addr().String())
	finder := c.node(nil, t.TempDir())
	var mu sync.Mutex
	dials := map[string]int{}
	finder.probes.dial = func(ctx context.Context, network, addr string, guard bool) (net.Conn, error) {
		mu.Lock()
		dials[addr]++
		mu.Unlock()
		return (&prober{}).dialer(ctx, network, addr, guard)
	}
	count := func(addr string) int { mu.Lock(); defer mu.Unlock(); return dials[addr] }
	if got := findPeers(t, finder, "acme/exchange"); len(got) != 2 || !got[victim.ID().String()].Reachable {
		t.Fatalf("before the crash: %+v", got)
	}
	freeze(victim, va)
	vln.Close()
	vep := vln.Addr().String()
	before := count(vep)
	in := findPeers(t, finder, "acme/exchange")[victim.ID().String()]
	if in.Reachable || count(vep) != before+1 {
		t.Fatalf("first find after the crash: %+v, %d dials", in, count(vep)-before)
	}
	in = findPeers(t, finder, "acme/exchange")[victim.ID().String()]
	if in.Reachable || count(vep) != before+1 || !strings.HasPrefix(in.Probe[vep], "skipped: unreachable") {
		t.Fatalf("second find after the crash: %+v, %d dials", in, count(vep)-before)
	}
	if s := findPeers(t, finder, "acme/exchange")[survivor.ID().String()]; !s.Reachable {
		t.Fatalf("survivor: %+v", s)
	}
}

// countingListener listens on network/addr and counts the connections it
// accepts until the test ends.
func countingListener(t *testing.T, network, addr string) (net.Listener, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln, &n
}

// TestProbeRules: which endpoints a find dials, for records from the
// network and for this machine's cells.
func TestProbeRules(t *testing.T) {
	runtime := t.TempDir()
	n := probeNode(t, Config{RuntimeDir: runtime})
	same := probeNode(t, Config{SameMachine: true})
	now := time.Now()
	_, localKey, _ := ed25519.GenerateKey(rand.Reader)
	localID := signed(t, localKey, "acme/x", 1, now, "192.0.2.1:1").Peer
	if err := writeLocal(runtime, LocalCell{Name: "acme/x", Peer: localID.String()}); err != nil {
		t.Fatal(err)
	}
	// Real nodes on loopback: one connected to n, one only known by its
	// addresses.
	connected := probeNode(t, Config{})
	if err := n.Host().Connect(context.Background(), peer.AddrInfo{ID: connected.ID(), Addrs: connected.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	known := probeNode(t, Config{})
	n.Host().Peerstore().AddAddrs(known.ID(), known.Host().Addrs(), peerstore.TempAddrTTL)
	for _, tc := range []struct {
		name   string
		finder *Node
		key    ed25519.PrivateKey // nil: a stranger's
		unix   bool
		host   string // for TCP: how the endpoint names the listener's host
		ok     bool
		why    string
	}{
		{"unix socket from the network", n, nil, true, "", false, "unix socket in a record from the network"},
		{"unix socket even on one machine", same, nil, true, "", false, "unix socket"},
		{"unix socket of a local cell", n, localKey, true, "", true, ""},
		{"loopback from the network", n, nil, false, "127.0.0.1", false, "loopback endpoint"},
		{"another loopback address", n, nil, false, "127.0.0.2", false, "loopback endpoint"},
		{"localhost from the network", n, nil, false, "localhost", false, "loopback endpoint"},
		{"mapped loopback from the network", n, nil, false, "::ffff:127.0.0.1", false, "loopback endpoint"},
		{"unspecified from the network", n, nil, false, "0.0.0.0", false, "loopback endpoint"},
		{"loopback of a local cell", n, localKey, false, "127.0.0.1", true, ""},
		{"loopback of this node", n, n.priv, false, "127.0.0.1", true, ""},
		{"loopback of a peer connected over loopback", n, connected.priv, false, "127.0.0.1", true, ""},
		{"loopback of a peer at a loopback address", n, known.priv, false, "127.0.0.1", true, ""},
		{"loopback with SameMachine", same, nil, false, "127.0.0.1", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ep string
			var accepted *atomic.Int32
			if tc.unix {
				path := filepath.Join(t.TempDir(), "s.sock")
				_, accepted = countingListener(t, "unix", path)
				ep = "unix:" + path
			} else {
				ln, acc := countingListener(t, "tcp", "127.0.0.1:0")
				accepted = acc
				_, port, _ := net.SplitHostPort(ln.Addr().String())
				ep = net.JoinHostPort(tc.host, port)
			}
			ins := tc.finder.rank(context.Background(), []*record.Record{signed(t, tc.key, "acme/x", 1, now, ep)}, nil)
			got := ins[0]
			if got.Reachable != tc.ok || !strings.Contains(got.Probe[ep], tc.why) {
				t.Fatalf("%s: reachable %v, probe %q; want %v, %q", ep, got.Reachable, got.Probe, tc.ok, tc.why)
			}
			if !tc.ok && accepted.Load() != 0 {
				t.Fatalf("%s was dialled", ep)
			}
		})
	}
	if !n.onMachineConnected(known.ID()) {
		t.Fatal("the peer known at a loopback address was not connected to")
	}
}

func (n *Node) onMachineConnected(p peer.ID) bool {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if loopbackConn(c) {
			return true
		}
	}
	return false
}

// TestProbeGuardRefusesLoopback: a dial for a record from the network
// refuses loopback addresses after names are resolved.
func TestProbeGuardRefusesLoopback(t *testing.T) {
	ln, accepted := countingListener(t, "tcp", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var p prober
	for _, addr := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port} {
		if _, err := p.dialer(context.Background(), "tcp", addr, true); !errors.Is(err, errLoopbackRefused) {
			t.Errorf("guarded dial of %s: %v", addr, err)
		}
	}
	if accepted.Load() != 0 {
		t.Fatal("a guarded dial reached the loopback listener")
	}
	c, err := p.dialer(context.Background(), "tcp", "127.0.0.1:"+port, false)
	if err != nil {
		t.Fatalf("unguarded dial: %v", err)
	}
	c.Close()
}

// TestProbeCapPerFind: 100 records of 16 endpoints each make 64 dials, one
// for each of the first 64 records; the rest say why they were not probed.
func TestProbeCapPerFind(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{}
	n.probes.dial = f.dial
	// The fake dials answer at once: a long probe window keeps a loaded
	// machine (CI under -race) from cutting the find before 64 have begun.
	n.probes.timeout = time.Minute
	now := time.Now()
	var recs []*record.Record
	for i := range 100 {
		var eps []string
		for j := range 16 {
			eps = append(eps, fmt.Sprintf("192.0.2.%d:%d", i+1, 9000+j))
		}
		recs = append(recs, signed(t, nil, "acme/x", 1, now, eps...))
	}
	ins := n.rank(context.Background(), recs, nil)
	if got := f.total(); got != MaxProbesPerFind {
		t.Fatalf("%d dials, want %d", got, MaxProbesPerFind)
	}
	reachable := 0
	for _, in := range ins {
		if in.Reachable {
			reachable++
			if in.Best != in.Endpoints[0] {
				t.Fatalf("a second endpoint probed before every record had one: %+v", in)
			}
		} else if !strings.Contains(in.Probe[in.Endpoints[0]], "over the 64 probes of one find") {
			t.Fatalf("unprobed instance says %q", in.Probe)
		}
	}
	if reachable != MaxProbesPerFind {
		t.Fatalf("%d instances probed, want %d", reachable, MaxProbesPerFind)
	}
}

// TestProbeDedupe: an endpoint listed by many records, and twice in one,
// is dialled once, and every record gets the answer.
func TestProbeDedupe(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{}
	n.probes.dial = f.dial
	now := time.Now()
	var recs []*record.Record
	for range 10 {
		recs = append(recs, signed(t, nil, "acme/x", 1, now, "192.0.2.7:80", "192.0.2.7:80"))
	}
	for _, in := range n.rank(context.Background(), recs, nil) {
		if !in.Reachable {
			t.Fatalf("unreachable: %+v", in)
		}
	}
	if got := f.count("192.0.2.7:80"); got != 1 {
		t.Fatalf("%d dials of one endpoint", got)
	}
}

// TestProbesInFlightCap: five finds of 64 stalled endpoints each never
// have more than MaxProbesInFlight dials open at once on one node.
func TestProbesInFlightCap(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{block: make(chan struct{})}
	n.probes.dial, n.probes.timeout = f.dial, time.Minute
	now := time.Now()
	const finds = 5
	var wg sync.WaitGroup
	for i := range finds {
		var recs []*record.Record
		for j := range MaxProbesPerFind {
			recs = append(recs, signed(t, nil, "acme/x", 1, now, fmt.Sprintf("192.0.%d.%d:80", i, j)))
		}
		wg.Go(func() { n.rank(context.Background(), recs, nil) })
	}
	waitFor(t, "the node's probes all in flight", func() bool { return f.inFlight.Load() == MaxProbesInFlight })
	close(f.block)
	wg.Wait()
	if got := f.most.Load(); got != MaxProbesInFlight {
		t.Fatalf("at most %d probes in flight, want %d", got, MaxProbesInFlight)
	}
	if got := f.total(); got != finds*MaxProbesPerFind {
		t.Fatalf("%d dials, want %d (the waiting ones dial when a slot frees)", got, finds*MaxProbesPerFind)
	}
}
