// Package delaynet builds a small Ethernet network of Linux network
// namespaces joined by a userspace switch that delays every frame, for
// measuring real processes over a link with a known round-trip time on a
// kernel without netem.
//
// A Network owns one switch namespace and one namespace per node. Each node
// namespace has an interface eth0 with an address in 10.77.0.0/16; its veth
// peer lives in the switch namespace, where an AF_PACKET socket reads every
// frame the node sends. The switch learns source MAC addresses, floods
// frames to unknown or group addresses, and writes each frame out of its
// destination port Delay after it arrived, in arrival order per port: a
// frame between two nodes takes Delay one way, so a round trip takes twice
// Delay. Every node's neighbour table holds a permanent entry for every
// other node, as a router's warm neighbour cache would on a wide-area path,
// so that the first packet to a peer costs no extra round trip, and so that
// a large network does not overflow the kernel's ARP table, which all
// namespaces share (see neighbours); ARP requests for node addresses that
// still come are answered by the switch at once. Offloads (checksum, TSO,
// GSO, GRO) are turned off on every veth so that frames are whole and
// checksummed, and IPv6 is off on them (no DAD or router solicitation noise;
// lo keeps ::1).
//
// Frames are held up when the switch's own process cannot run: its threads
// run at real-time priority (SCHED_FIFO, else nice -10) so that the
// processes under test do not delay them, but a garbage collection in the
// hosting process can still hold a frame for milliseconds. A process that
// hosts the switch should allocate little, or raise GOGC (the benchmark
// turns the collector off below a memory limit); Stats reports how late
// frames went out, so a run can be judged.
//
// Everything needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and the ip command.
// Namespaces are named with a prefix that carries the creating process's
// PID; Close deletes them, and New first deletes those left by a process
// that no longer runs (after killing what still runs inside them).
//
// A Network's methods are safe for concurrent use.
package delaynet

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDelay is the one-way delay of a zero Config.
const DefaultDelay = 20 * time.Millisecond

// NamePrefix begins the name of every namespace this package creates,
// followed by the creating process's PID and "x".
const NamePrefix = "dnet"

// ErrClosed is returned by Network methods after Close.
var ErrClosed = errors.New("delaynet: network closed")

// Config configures a Network. The zero value works: 20 ms one way, no
// trace, no logs.
type Config struct {
	// Delay is the one-way delay of every frame through the switch; zero
	// means DefaultDelay.
	Delay time.Duration
	// QueueLen is how many frames may wait in one port's queue; a frame
	// arriving at a full queue is dropped and counted. Zero means 16384.
	QueueLen int
	// Trace, when not nil, is called for every frame the switch takes in
	// from a node, on the goroutine reading that node's port, before the
	// frame is queued. It must return quickly.
	Trace func(Packet)
	// Logger receives setup and teardown logs; nil means discard.
	Logger *slog.Logger
}

// Node is one namespace of a Network.
type Node struct {
	// Index numbers the node from 1 in the order it was added.
	Index int
	// NS is the name of the node's network namespace.
	NS string
	// Addr is the address of the node's eth0 (prefix length 16).
	Addr netip.Addr
	// MAC is the hardware address of the node's eth0.
	MAC net.HardwareAddr
}

// Stats counts what the switch has done since New.
type Stats struct {
	Frames   uint64        // frames taken in from nodes
	Bytes    uint64        // their bytes
	Flooded  uint64        // frames sent to every other port
	ARP      uint64        // ARP requests answered by the switch (none while the nodes' permanent neighbour entries stand)
	Dropped  uint64        // frames dropped: queue full, unknown port, short
	Oversize uint64        // frames longer than the MTU allows (offloads left on)
	Errors   uint64        // read and write errors
	Late     uint64        // frames sent more than 1 ms after their due time
	Late5    uint64        // frames sent more than 5 ms after their due time
	MaxLate  time.Duration // the longest a frame was sent after its due time
	MeanLate time.Duration // the mean of that lateness (due: the kernel's receive time plus Delay)
}

// Network is a running switch with its namespaces.
type Network struct {
	cfg    Config
	log    *slog.Logger
	prefix string
	swNS   string

	done chan struct{} // closed when Close begins: queued frames go out at once
	wake int           // eventfd, written by Close to wake the readers

	addMu  sync.Mutex // serializes the neighbour entries of Add
	mu     sync.RWMutex
	closed bool
	nodes  []*Node
	ports  map[int]*port       // by node index
	macs   map[[6]byte]*port   // learned: source MAC -> port
	arp    map[[4]byte][6]byte // node address -> node MAC
	wg     sync.WaitGroup      // readers
	egress sync.WaitGroup      // egress goroutines

	stats struct {
		frames, bytes, flooded, arp, dropped, oversize, errors atomic.Uint64
		late, lateN, maxLate                                   atomic.Int64
		late1ms, late5ms                                       atomic.Uint64
	}
}

var runSeq atomic.Int64

// New creates the switch namespace. It first deletes the namespaces that
// earlier processes left behind (see Cleanup). Close deletes everything New
// and Add created.
func New(cfg Config) (*Network, error) {
	if cfg.Delay == 0 {
		cfg.Delay = DefaultDelay
	}
	if cfg.Delay < 0 {
		return nil, fmt.Errorf("delaynet: negative delay %v", cfg.Delay)
	}
	if cfg.QueueLen == 0 {
		cfg.QueueLen = 16384
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("delaynet: the ip command (iproute2) is needed: %w", err)
	}
	if err := Cleanup(log); err != nil {
		log.Warn("could not delete every stale namespace", "err", err)
	}
	prefix := fmt.Sprintf("%s%dx%d-", NamePrefix, os.Getpid(), runSeq.Add(1))
	n := &Network{cfg: cfg, log: log, prefix: prefix, swNS: prefix + "sw", done: make(chan struct{}),
		ports: map[int]*port{}, macs: map[[6]byte]*port{}, arp: map[[4]byte][6]byte{}}
	var err error
	if n.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("delaynet: eventfd: %w", err)
	}
	if err := ip("netns", "add", n.swNS); err != nil {
		unix.Close(n.wake)
		return nil, err
	}
	if err := inNS(n.swNS, func() error { return writeSysctl("net/ipv6/conf/all/disable_ipv6", "1") }); err != nil {
		n.Close()
		return nil, err
	}
	log.Debug("switch namespace created", "ns", n.swNS, "delay", cfg.Delay)
	return n, nil
}

// Delay returns the one-way delay of the network's links.
func (n *Network) Delay() time.Duration { return n.cfg.Delay }

// Prefix returns the prefix of every namespace name of this network.
func (n *Network) Prefix() string { return n.prefix }

// Nodes returns the nodes added so far, in order.
func (n *Network) Nodes() []*Node {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return append([]*Node(nil), n.nodes...)
}

// Add creates a node: its namespace (with lo up), a veth pair between it
// and the switch, the address 10.77.(i/256).(i%256)/16 for the i-th node,
// and the switch port that forwards its frames. At most 65534 nodes.
func (n *Network) Add() (*Node, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	i := len(n.nodes) + 1
	if i > 65534 {
		n.mu.Unlock()
		return nil, errors.New("delaynet: at most 65534 nodes")
	}
	nd := &Node{Index: i, NS: fmt.Sprintf("%sn%d", n.prefix, i),
		Addr: netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}),
		MAC:  net.HardwareAddr{0x02, 0x77, 0, 0, byte(i >> 8), byte(i)}}
	n.nodes = append(n.nodes, nd) // so that Close deletes the namespace even if setup fails half way
	n.mu.Unlock()

	p, err := n.setup(nd)
	if err != nil {
		return nil, fmt.Errorf("delaynet: add node %d: %w", i, err)
	}
	// Permanent neighbour entries both ways between the new node and every
	// node already up (see neighbours). addMu, not mu, so that the switch
	// keeps forwarding meanwhile.
	n.addMu.Lock()
	defer n.addMu.Unlock()
	n.mu.RLock()
	others := make([]*port, 0, len(n.ports))
	for _, q := range n.ports {
		others = append(others, q)
	}
	n.mu.RUnlock()
	for _, q := range others {
		if err := q.nb.add(nd.Addr, nd.MAC); err != nil {
			p.close()
			return nil, fmt.Errorf("delaynet: add node %d: in node %d: %w", i, q.idx, err)
		}
		if err := p.nb.add(q.addr, q.mac[:]); err != nil {
			p.close()
			return nil, fmt.Errorf("delaynet: add node %d: %w", i, err)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		p.close()
		return nil, ErrClosed
	}
	n.ports[i] = p
	n.arp[nd.Addr.As4()] = [6]byte(nd.MAC)
	n.wg.Add(1)
	go n.read(p)
	n.egress.Add(1)
	go n.send(p)
	return nd, nil
}

// setup makes a node's namespace and link and opens its switch port.
func (n *Network) setup(nd *Node) (*port, error) {
	pname := fmt.Sprintf("p%d", nd.Index)
	if err := ip("netns", "add", nd.NS); err != nil {
		return nil, err
	}
	if err := inNS(nd.NS, func() error { return writeSysctl("net/ipv6/conf/default/disable_ipv6", "1") }); err != nil {
		return nil, err
	}
	if err := ip("link", "add", pname, "netns", n.swNS, "type", "veth",
		"peer", "name", "eth0", "address", nd.MAC.String(), "netns", nd.NS); err != nil {
		return nil, err
	}
	if err := inNS(nd.NS, func() error { return offloadsOff("eth0") }); err != nil {
		return nil, err
	}
	if err := inNS(n.swNS, func() error { return offloadsOff(pname) }); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", nd.NS, "link", "set", "lo", "up"},
		{"-n", nd.NS, "addr", "add", nd.Addr.String() + "/16", "dev", "eth0"},
		{"-n", nd.NS, "link", "set", "eth0", "up"},
		{"-n", n.swNS, "link", "set", pname, "up"},
	} {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	p := &port{idx: nd.Index, mac: [6]byte(nd.MAC), addr: nd.Addr, out: make(chan frame, n.cfg.QueueLen)}
	err := inNS(nd.NS, func() error {
		var err error
		p.nb, err = openNeighbours("eth0")
		return err
	})
	if err != nil {
		return nil, err
	}
	err = inNS(n.swNS, func() error {
		var err error
		p.fd, err = openPort(pname)
		return err
	})
	if err != nil {
		p.nb.close()
		return nil, err
	}
	return p, nil
}

// Start starts cmd inside the node's namespace: the process is forked from
// a thread that has entered the namespace, so it costs what a plain Start
// does (ip netns exec adds its own exec and mounts). The rest of the
// environment (file system, PID space) is shared with the caller.
func (nd *Node) Start(cmd *exec.Cmd) error {
	return inNS(nd.NS, cmd.Start)
}

// Do runs f on an OS thread inside the node's namespace, for example to
// open a listener or dial: sockets stay in the namespace they were made in.
func (nd *Node) Do(f func() error) error {
	return inNS(nd.NS, f)
}

// Stats returns the switch's counters.
func (n *Network) Stats() Stats {
	s := Stats{
		Frames: n.stats.frames.Load(), Bytes: n.stats.bytes.Load(), Flooded: n.stats.flooded.Load(),
		ARP: n.stats.arp.Load(), Dropped: n.stats.dropped.Load(), Oversize: n.stats.oversize.Load(),
		Errors: n.stats.errors.Load(), Late: n.stats.late1ms.Load(), Late5: n.stats.late5ms.Load(), MaxLate: time.Duration(n.stats.maxLate.Load()),
	}
	if k := n.stats.lateN.Load(); k > 0 {
		s.MeanLate = time.Duration(n.stats.late.Load() / k)
	}
	return s
}

// Close stops the switch and deletes every namespace of the network (and
// with them the links). Processes still running in a node's namespace keep
// it alive, unnamed, until they exit: stop them first. Close is safe to call
// twice.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.done)
	ports := make([]*port, 0, len(n.ports))
	for _, p := range n.ports {
		ports = append(ports, p)
	}
	nodes := append([]*Node(nil), n.nodes...)
	n.mu.Unlock()

	var one [8]byte
	one[7] = 1
	if _, err := unix.Write(n.wake, one[:]); err != nil { // level-triggered: every reader wakes
		n.log.Warn("could not wake the readers", "err", err)
	}
	n.wg.Wait()
	for _, p := range ports {
		close(p.out) // nothing sends any more
	}
	n.egress.Wait()
	for _, p := range ports {
		p.close()
	}
	unix.Close(n.wake)

	var errs []error
	for _, nd := range nodes {
		if err := deleteNS(nd.NS); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNS(n.swNS); err != nil {
		errs = append(errs, err)
	}
	n.log.Debug("network closed", "prefix", n.prefix, "nodes", len(nodes))
	return errors.Join(errs...)
}
