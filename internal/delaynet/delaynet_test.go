package delaynet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"dnet123x1-sw", 123, true},
		{"dnet77x12-n40", 77, true},
		{"dnet123x1", 0, false}, // no node part
		{"dnetx1-sw", 0, false},
		{"dnet-1x1-sw", 0, false},
		{"dnet0x1-sw", 0, false},
		{"other123x1-sw", 0, false},
		{"dnet12ax1-sw", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid, ok := ownerPID(tc.name)
			if pid != tc.pid || ok != tc.ok {
				t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
			}
		})
	}
}

func TestARPReply(t *testing.T) {
	n := &Network{arp: map[[4]byte][6]byte{{10, 77, 0, 2}: {2, 0x77, 0, 0, 0, 2}}}
	req := arpReplyFrame([6]byte{2, 0x77, 0, 0, 0, 1}, [4]byte{10, 77, 0, 1}, [6]byte{}, [4]byte{10, 77, 0, 2})
	// Turn the reply-shaped frame into a broadcast request from .1 for .2.
	copy(req[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	binary.BigEndian.PutUint16(req[20:22], 1)
	for _, tc := range []struct {
		name string
		b    []byte
		want []byte
	}{
		{"request for a node", req, arpReplyFrame([6]byte{2, 0x77, 0, 0, 0, 2}, [4]byte{10, 77, 0, 2},
			[6]byte{2, 0x77, 0, 0, 0, 1}, [4]byte{10, 77, 0, 1})},
		{"request for an unknown address", func() []byte {
			b := bytes.Clone(req)
			b[41] = 9
			return b
		}(), nil},
		{"a reply", func() []byte {
			b := bytes.Clone(req)
			binary.BigEndian.PutUint16(b[20:22], 2)
			return b
		}(), nil},
		{"short", req[:30], nil},
		{"IPv4, not ARP", func() []byte {
			b := bytes.Clone(req)
			binary.BigEndian.PutUint16(b[12:14], 0x0800)
			return b
		}(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := n.arpReply(tc.b); !bytes.Equal(got, tc.want) {
				t.Errorf("arpReply = %x\nwant %x", got, tc.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	tcpSYN := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(tcpSYN[12:14], 0x0800)
	ipH := tcpSYN[14:]
	ipH[0], ipH[9] = 0x45, 6
	copy(ipH[12:16], []byte{10, 77, 0, 1})
	copy(ipH[16:20], []byte{10, 77, 0, 2})
	binary.BigEndian.PutUint16(ipH[20:22], 40000)
	binary.BigEndian.PutUint16(ipH[22:24], 4001)
	ipH[20+13] = 0x02
	frag := bytes.Clone(tcpSYN)
	binary.BigEndian.PutUint16(frag[14+6:14+8], 10)
	for _, tc := range []struct {
		name string
		b    []byte
		want Packet
	}{
		{"TCP SYN", tcpSYN, Packet{Len: 54, Proto: 6, Flags: 2,
			Src: netip.MustParseAddrPort("10.77.0.1:40000"), Dst: netip.MustParseAddrPort("10.77.0.2:4001")}},
		{"fragment: no ports", frag, Packet{Len: 54, Proto: 6,
			Src: netip.MustParseAddrPort("10.77.0.1:0"), Dst: netip.MustParseAddrPort("10.77.0.2:0")}},
		{"ARP", make([]byte, 42), Packet{Len: 42}},
		{"short IPv4", tcpSYN[:20], Packet{Len: 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describe(tc.b); got != tc.want {
				t.Errorf("describe = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// needRoot skips tests that make namespaces unless they can.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
}

func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestNetwork joins three namespaces and checks that TCP between them works
// for small and large transfers, and that a round trip takes at least twice
// the one-way delay.
func TestNetwork(t *testing.T) {
	needRoot(t)
	net0, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net0.Close() })
	var nodes []*Node
	for range 3 {
		nd, err := net0.Add()
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, nd)
	}
	if got := len(namespacesWithPrefix(t, net0.Prefix())); got != 4 {
		t.Fatalf("%d namespaces with prefix %s, want 4", got, net0.Prefix())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Node 1 runs an echo server that also hashes what it is sent.
	var ln net.Listener
	if err := nodes[0].Do(func() (err error) { ln, err = net.Listen("tcp4", ":7000"); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	dial := func(from *Node) (net.Conn, time.Duration) {
		t.Helper()
		var c net.Conn
		start := time.Now()
		err := from.Do(func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(nodes[0].Addr, 7000).String())
			return
		})
		if err != nil {
			t.Fatalf("dial from node %d: %v", from.Index, err)
		}
		return c, time.Since(start)
	}
	rtt := 2 * net0.Delay()

	// Node 2: connect (one round trip), then a 1-byte echo (another).
	c, connect := dial(nodes[1])
	defer c.Close()
	if connect < rtt {
		t.Errorf("TCP connect took %v, less than the round trip %v", connect, rtt)
	}
	start := time.Now()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if echo := time.Since(start); echo < rtt {
		t.Errorf("echo took %v, less than the round trip %v", echo, rtt)
	}

	// Node 3: 1 MiB each way, far more than a frame: it must come back whole.
	c3, _ := dial(nodes[2])
	defer c3.Close()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	go c3.Write(data)
	got := make([]byte, len(data))
	c3.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c3, got); err != nil {
		t.Fatalf("read the echo of 1 MiB: %v (switch %+v)", err, net0.Stats())
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("1 MiB echoed with different bytes")
	}

	st := net0.Stats()
	if st.Oversize != 0 || st.Errors != 0 {
		t.Errorf("switch saw %d oversize frames and %d errors: offloads on?", st.Oversize, st.Errors)
	}
	if st.ARP != 0 {
		t.Errorf("the switch answered %d ARP requests: a node's neighbour entry for another is not permanent", st.ARP)
	}
	checkNeighbours(t, nodes)
	t.Logf("connect %v; switch %+v", connect, st)

	ln.Close()
	c.Close()
	c3.Close()
	if err := net0.Close(); err != nil {
		t.Fatal(err)
	}
	if left := namespacesWithPrefix(t, net0.Prefix()); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if _, err := net0.Add(); err != ErrClosed {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
}

// checkNeighbours checks that every node's neighbour table holds a
// permanent entry for each other node and nothing else for their addresses:
// the kernel's ARP table is shared by all namespaces and bounded by
// gc_thresh3 (1024 entries by default), so a full mesh of 32 nodes filled
// it with entries of their own and then a new namespace could send to no
// one (ENOBUFS); permanent entries do not count against that bound.
func checkNeighbours(t *testing.T, nodes []*Node) {
	t.Helper()
	for _, nd := range nodes {
		out, err := exec.Command("ip", "-n", nd.NS, "-4", "neigh", "show", "dev", "eth0", "nud", "all").CombinedOutput()
		if err != nil {
			t.Fatalf("ip neigh in %s: %v: %s", nd.NS, err, out)
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if l != "" {
				f := strings.Fields(l)
				got[f[0]] = strings.Join(f[1:], " ")
			}
		}
		for _, o := range nodes {
			entry, ok := got[o.Addr.String()]
			delete(got, o.Addr.String())
			switch {
			case o == nd && ok:
				t.Errorf("node %d has a neighbour entry for its own address: %s", nd.Index, entry)
			case o != nd && entry != "lladdr "+o.MAC.String()+" PERMANENT":
				t.Errorf("node %d's neighbour entry for node %d is %q, want %q", nd.Index, o.Index, entry, "lladdr "+o.MAC.String()+" PERMANENT")
			}
		}
		for a, e := range got {
			t.Errorf("node %d has a neighbour entry for %s, no node's address: %s", nd.Index, a, e)
		}
	}
}

// TestCleanup deletes the namespaces of a process that no longer runs, and
// leaves those of a running one alone.
func TestCleanup(t *testing.T) {
	needRoot(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := NamePrefix + strconv.Itoa(dead.Process.Pid) + "x1-sw"
	live := NamePrefix + strconv.Itoa(os.Getpid()) + "x999-sw"
	for _, name := range []string{stale, live} {
		if err := ip("netns", "add", name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { deleteNS(stale); deleteNS(live) })
	if err := Cleanup(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, stale)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s still there (%v)", stale, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, live)); err != nil {
		t.Errorf("namespace of this process deleted: %v", err)
	}
}
