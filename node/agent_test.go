package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
)

// sockDir is a short directory for unix sockets (paths are limited to 108
// bytes, and test names make t.TempDir long).
func sockDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "cn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// agentConfig is an agent on the cluster: a DHT server on loopback with a
// runtime directory of its own (it learns of other cells through the DHT
// only), DNS on a free loopback port, and fast background finds.
func (c *cluster) agentConfig() AgentConfig {
	c.t.Helper()
	return AgentConfig{
		Node: Config{Home: sockDir(c.t), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: sockDir(c.t),
			Bootstrap: []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}},
			DHT:       dht.Config{Mode: dht.ModeServer}, Now: c.now},
		API:   filepath.Join(sockDir(c.t), "api.sock"),
		DNS:   "127.0.0.1:0",
		Watch: WatchConfig{Refresh: 100 * time.Millisecond},
	}
}

func (c *cluster) agent(cfg AgentConfig) *Agent {
	c.t.Helper()
	a, err := NewAgent(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Bootstrap(ctx); err != nil {
		c.t.Fatal(err)
	}
	return a
}

func dialAgent(t testing.TB, a *Agent) *Client {
	t.Helper()
	cl, err := DialAPI(a.APIAddr())
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func dnsQuery(t testing.TB, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatalf("DNS %s %s: %v", dns.TypeToString[qtype], name, err)
	}
	return r
}

// TestAgentEndToEnd: an agent registers a cell through its shared socket;
// a cell announced by another node is watched, with its signed record,
// and answered over DNS; withdrawing it wakes the watch and empties DNS;
// the agent's own cell is found by another node through the DHT.
func TestAgentEndToEnd(t *testing.T) {
	c := newCluster(t, nil)
	a := c.agent(c.agentConfig())
	cl := dialAgent(t, a)
	ctx := context.Background()

	// A cell of the agent's, registered through the API.
	ln := service(t)
	res, err := cl.Register(ctx, Registration{Name: "acme/ledger", Endpoint: ln.Addr().String(), Check: Check{Interval: Duration(50 * time.Millisecond)}})
	if err != nil || res != Created {
		t.Fatalf("register: %v, %v", res, err)
	}
	if res, err := cl.Register(ctx, Registration{Name: "acme/ledger", Endpoint: ln.Addr().String(), Check: Check{Interval: Duration(50 * time.Millisecond)}}); err != nil || res != Unchanged {
		t.Fatalf("register again: %v, %v", res, err)
	}
	cells, err := cl.Cells(ctx)
	if err != nil || len(cells) != 1 || cells[0].Name != "acme/ledger" || cells[0].Source != SourceAPI {
		t.Fatalf("cells: %+v, %v", cells, err)
	}
	finder := c.node(nil, t.TempDir())
	waitFor(t, "the agent's cell found through the DHT", func() bool {
		_, ok := findPeers(t, finder, "acme/ledger")[a.Node().ID().String()]
		return ok
	})

	// A cell announced by another node, watched.
	other := c.node(nil, t.TempDir())
	oln := service(t)
	an := announce(t, other, "acme/exchange", oln.Addr().String())
	var w *WatchResult
	waitFor(t, "the watch to see the other node's instance", func() bool {
		w, err = cl.Watch(ctx, "acme/exchange", 0, 0, FindOptions{})
		return err == nil && len(w.Instances) == 1
	})
	in := w.Instances[0]
	if in.Peer != other.ID().String() || !in.Reachable || w.Index == 0 {
		t.Fatalf("watched instance: %+v", w)
	}
	r, err := record.Verify(in.Record, "acme/exchange", time.Now())
	if err != nil || r.Peer != other.ID() || r.Seq != in.Seq {
		t.Fatalf("the watch's record does not verify as the instance: %v", err)
	}

	_, port, _ := net.SplitHostPort(oln.Addr().String())
	srv := dnsQuery(t, a.DNSAddr(), "_exchange._tcp.acme.cell.", dns.TypeSRV)
	if srv.Rcode != dns.RcodeSuccess || len(srv.Answer) != 1 {
		t.Fatalf("SRV: %v", srv)
	}
	s := srv.Answer[0].(*dns.SRV)
	if strconv.Itoa(int(s.Port)) != port || s.Target != "7f000001.addr.cell." || s.Hdr.Ttl == 0 || s.Hdr.Ttl > 5 {
		t.Fatalf("SRV record: %v", s)
	}
	if len(srv.Extra) < 1 || srv.Extra[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("SRV additional section: %v", srv.Extra)
	}
	aa := dnsQuery(t, a.DNSAddr(), "Exchange.ACME.cell.", dns.TypeA)
	if aa.Rcode != dns.RcodeSuccess || len(aa.Answer) != 1 || aa.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("A: %v", aa)
	}

	// A blocked watch wakes when the instance is withdrawn.
	done := make(chan *WatchResult, 1)
	go func() {
		w2, err := cl.Watch(ctx, "acme/exchange", w.Index, time.Minute, FindOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- w2
	}()
	an.Stop(ctx)
	w2 := <-done
	if len(w2.Instances) != 0 || w2.Index == w.Index {
		t.Fatalf("after the withdrawal: %+v", w2)
	}
	waitFor(t, "DNS to stop answering the withdrawn instance", func() bool {
		return dnsQuery(t, a.DNSAddr(), "_exchange._tcp.acme.cell.", dns.TypeSRV).Rcode == dns.RcodeNameError
	})

	// Deregistering withdraws the agent's cell.
	if err := cl.Deregister(ctx, "acme/ledger"); err != nil {
		t.Fatal(err)
	}
	var ae *APIError
	if err := cl.Deregister(ctx, "acme/ledger"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("deregister twice: %v", err)
	}
	waitFor(t, "the deregistered cell to disappear", func() bool {
		_, ok := findPeers(t, finder, "acme/ledger")[a.Node().ID().String()]
		return !ok
	})
}

// backlogZero listens on loopback TCP with a listen backlog of 0: once one
// connection waits to be accepted, the kernel drops new SYNs, so a
// connect (a health check) hangs until its timeout.
func backlogZero(t *testing.T) (net.Listener, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// synSent reports whether a connection to port is waiting for its SYN to
// be answered (/proc/net/tcp state 02).
func synSent(t *testing.T, port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip("no /proc/net/tcp")
	}
	want := fmt.Sprintf(":%04X", port)
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 3 && strings.HasSuffix(f[2], want) && f[3] == "02" {
			return true
		}
	}
	return false
}

// TestStopDuringCheckWithdraws: stopping an announcer (deregistering a
// cell) while a health check is under way still publishes the withdrawal:
// the cut check is not taken for a service that went down.
func TestStopDuringCheckWithdraws(t *testing.T) {
	c := newCluster(t, nil)
	others := []*Node{c.node(nil, t.TempDir()), c.node(nil, t.TempDir())}
	n := c.node(nil, t.TempDir())
	ln, port := backlogZero(t)
	accept := make(chan bool, 1)
	accept <- true
	go func() {
		for <-accept {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			accept <- true
		}
	}()
	a := announce(t, n, "acme/slow", ln.Addr().String())
	waitFor(t, "the record at every storer", func() bool { return a.Status().StoredAt == 3 })
	<-accept // accept no more: the next checks fill the queue, then hang
	t.Cleanup(func() { close(accept) })
	waitFor(t, "a health check hanging on its SYN", func() bool { return synSent(t, port) })
	a.Stop(context.Background())
	// Every other storer holds the withdrawal (none the live record).
	for _, m := range append([]*Node{c.boot}, others...) {
		for _, r := range m.DHT().Store().GetFor("acme/slow", nil) {
			if r.Peer == n.ID() && !r.Withdrawn {
				t.Fatalf("stopped during a check, the instance is still live at %s", m.ID())
			}
		}
	}
}
