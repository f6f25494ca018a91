package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Limits of the endpoint probes of finds.
const (
	// MaxProbesPerFind is how many dials one find makes at most, endpoint
	// probes and libp2p dials that check a peer runs on this machine
	// together. Endpoints past it are not probed.
	MaxProbesPerFind = 64
	// MaxProbesInFlight is how many probes a node runs at once, over all
	// its finds; a probe that gets no slot within the probe timeout is not
	// made.
	MaxProbesInFlight = 256
	// UnreachableFor is how long a node remembers that an endpoint of a
	// record did not answer; finds in that time do not probe it again.
	UnreachableFor = 30 * time.Second

	maxRemembered = 4096 // remembered failures, at most
)

// errLoopbackRefused is a probe of a name that resolved to this machine,
// for a record from the network.
var errLoopbackRefused = errors.New("resolves to this machine (loopback), and the record came from the network")

// prober runs the probes of a node's finds. Its zero value works.
type prober struct {
	mu     sync.Mutex
	failed map[string]failure // by memKey
	sem    chan struct{}      // MaxProbesInFlight slots

	// Test seams: dial replaces the TCP and unix dials (guard: refuse a
	// name that resolves to loopback); timeout, when not zero, replaces
	// ProbeTimeout.
	dial    func(ctx context.Context, network, addr string, guard bool) (net.Conn, error)
	timeout time.Duration
}

type failure struct {
	at  time.Time
	why string
}

func (p *prober) slots() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sem == nil {
		p.sem = make(chan struct{}, MaxProbesInFlight)
	}
	return p.sem
}

// remembered returns the failure remembered under key, if it is recent.
func (p *prober) remembered(key string, now time.Time) (failure, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.failed[key]
	if !ok || now.Sub(f.at) >= UnreachableFor || now.Before(f.at) {
		return failure{}, false
	}
	return f, true
}

func (p *prober) remember(key string, f failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed == nil {
		p.failed = map[string]failure{}
	}
	if len(p.failed) >= maxRemembered {
		for k, old := range p.failed {
			if f.at.Sub(old.at) >= UnreachableFor {
				delete(p.failed, k)
			}
		}
		if len(p.failed) >= maxRemembered {
			clear(p.failed)
		}
	}
	p.failed[key] = f
}

// probeTimeout is ProbeTimeout, or the test seam's.
func (p *prober) probeTimeout() time.Duration {
	if p.timeout > 0 {
		return p.timeout
	}
	return ProbeTimeout
}

func (p *prober) dialer(ctx context.Context, network, addr string, guard bool) (net.Conn, error) {
	if p.dial != nil {
		return p.dial(ctx, network, addr, guard)
	}
	var d net.Dialer
	if guard {
		d.Control = refuseLoopback
	}
	return d.DialContext(ctx, network, addr)
}

// refuseLoopback is a net.Dialer Control hook that refuses to connect to
// this machine: a loopback or unspecified address, once names are
// resolved.
func refuseLoopback(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	if ip = ip.Unmap(); ip.IsLoopback() || ip.IsUnspecified() {
		return errLoopbackRefused
	}
	return nil
}

// loopbackHost reports whether a TCP endpoint's host names this machine:
// a loopback or unspecified address, an empty host, or "localhost".
func loopbackHost(address string) bool {
	host, _, _ := net.SplitHostPort(address)
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && (ip.Unmap().IsLoopback() || ip.IsUnspecified())
}

// loopbackConn reports whether c comes from this machine, directly (not
// relayed, not limited): over the loopback interface, or from one of this
// machine's own interface addresses (nodes on one machine that listen on
// every interface often connect over its LAN address).
func loopbackConn(c network.Conn) bool {
	if c.Stat().Limited {
		return false
	}
	a := c.RemoteMultiaddr()
	if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return false
	}
	return manet.IsIPLoopback(a) || ownAddr(a)
}

// ownAddr reports whether a's IP is one of this machine's interface
// addresses.
func ownAddr(a ma.Multiaddr) bool {
	ip, err := manet.ToIP(a)
	if err != nil {
		return false
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// localPeers returns the peers known to run on this machine without asking
// the network: this node and the nodes whose cells are registered in the
// runtime directory (which only this user can write to).
func (n *Node) localPeers() map[peer.ID]bool {
	local := map[peer.ID]bool{n.ID(): true}
	for _, c := range n.localCells() {
		if id, err := peer.Decode(c.Peer); err == nil {
			local[id] = true
		}
	}
	return local
}

// onThisMachine shows that peer p runs on this machine: this node has a
// direct connection to it over loopback, or makes one to p's loopback
// addresses (the handshake proves the peer's key). It returns why not
// otherwise, and whether it dialled.
func (n *Node) onThisMachine(ctx context.Context, p peer.ID) (ok bool, why string, dialled bool) {
	conns := n.host.Network().ConnsToPeer(p)
	for _, c := range conns {
		if loopbackConn(c) {
			return true, "", false
		}
	}
	if len(conns) > 0 {
		return false, "the peer is connected from another machine's address", false
	}
	loop := n.loopbackAddrs(p)
	if len(loop) == 0 {
		return false, "no loopback address known for the peer", false
	}
	sem := n.probes.slots()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Sprintf("%d probes in flight on this node", MaxProbesInFlight), false
	}
	err := n.host.Connect(ctx, peer.AddrInfo{ID: p, Addrs: loop})
	<-sem
	if err != nil {
		return false, "could not connect to the peer over loopback: " + err.Error(), true
	}
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if loopbackConn(c) {
			return true, "", true
		}
	}
	return false, "the peer answered from another machine's address", true
}

// loopbackAddrs returns the direct loopback addresses this node knows of
// peer p.
func (n *Node) loopbackAddrs(p peer.ID) []ma.Multiaddr {
	var loop []ma.Multiaddr
	for _, a := range n.host.Peerstore().Addrs(p) {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err != nil && manet.IsIPLoopback(a) {
			loop = append(loop, a)
		}
	}
	return loop
}

// probeTarget is one dial, shared by every record that lists the endpoint.
type probeTarget struct {
	ep    Endpoint
	guard bool
	users []probeUse // rank's: the records' endpoints it answers for
	done  chan struct{}
	// Set by run before done is closed:
	rtt  time.Duration
	err  error
	busy bool // not dialled: no slot among MaxProbesInFlight
	cut  bool // cut off by the find's end
}

type probeUse struct {
	inst int    // index in the instances
	ep   string // as the record spells it
	key  string // memKey
}

func memKey(r *record.Record, ep string) string {
	return fmt.Sprintf("%s/%d/%s", r.Peer, r.Seq, ep)
}

// rank probes the endpoints of recs and returns the instances, reachable
// ones first by latency (ties by peer ID), then the unreachable ones by
// peer ID. Records earlier in recs get their probes first when the per-find
// cap is reached. A probe of early (which may be nil) of the same endpoint
// is taken instead of a dial, and early's probes count against the cap.
// See FindWith for the rules.
func (n *Node) rank(ctx context.Context, recs []*record.Record, early *earlyProbes) []Instance {
	p := &n.probes
	timeout := p.probeTimeout()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := n.now()
	out := make([]Instance, len(recs))
	why := make([]map[string]string, len(recs))
	note := func(i int, ep, reason string) {
		if why[i] == nil {
			why[i] = map[string]string{}
		}
		why[i][ep] = reason
	}
	for i, r := range recs {
		out[i] = Instance{Peer: r.Peer.String(), Endpoints: r.Endpoints, Region: r.Region,
			Expires: r.Expires, Seq: r.Seq}
		if pub := r.Publisher(); pub != nil {
			out[i].Publisher = base64.StdEncoding.EncodeToString(pub)
		}
		if r.Manifest.Defined() {
			out[i].Manifest = r.Manifest.String()
		}
	}
	// An early check counts as a dial, as rank's own checks do.
	budget := MaxProbesPerFind - early.dials()
	used := 0 // early probes taken

	// Which records' peers run on this machine: local ones, or shown so
	// (only asked for peers whose records list a loopback endpoint).
	local := n.localPeers()
	onMachine := map[peer.ID]bool{}
	notWhy := map[peer.ID]string{}
	var ask []*record.Record
	for _, r := range recs {
		if local[r.Peer] || n.cfg.SameMachine {
			onMachine[r.Peer] = true
			continue
		}
		for _, s := range r.Endpoints {
			if e, err := ParseEndpoint(s); err == nil && e.Network == "tcp" && loopbackHost(e.Address) {
				if _, seen := notWhy[r.Peer]; !seen {
					notWhy[r.Peer] = ""
					ask = append(ask, r)
				}
				break
			}
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	// settle takes the verdict of a check of r's peer, early or rank's own.
	settle := func(r *record.Record, key string, ok bool, why string, dialled bool) {
		mu.Lock()
		defer mu.Unlock()
		onMachine[r.Peer] = ok
		notWhy[r.Peer] = why
		if !ok && dialled && parent.Err() == nil {
			p.remember(key, failure{at: now, why: why})
		}
	}
	for _, r := range ask {
		key := machineKey(r)
		if c := early.checkOf(r.Peer); c != nil {
			wg.Go(func() {
				<-c.done // within its probe timeout
				settle(r, key, c.ok, c.why, c.dialled)
			})
			continue
		}
		if f, ok := p.remembered(key, now); ok {
			mu.Lock()
			notWhy[r.Peer] = fmt.Sprintf("%s %s ago", f.why, now.Sub(f.at).Round(time.Second))
			mu.Unlock()
			continue
		}
		if budget == 0 {
			mu.Lock()
			notWhy[r.Peer] = fmt.Sprintf("over the %d probes of one find", MaxProbesPerFind)
			mu.Unlock()
			continue
		}
		if len(n.host.Network().ConnsToPeer(r.Peer)) == 0 {
			budget-- // a dial, probably
		}
		wg.Go(func() {
			ok, reason, dialled := n.onThisMachine(ctx, r.Peer)
			settle(r, key, ok, reason, dialled)
		})
	}
	wg.Wait()

	// The endpoints to dial: one per record in turn, so that every record
	// gets a probe before any gets a second; each endpoint once.
	targets := map[string]*probeTarget{}
	var order []*probeTarget
	seen := make([]map[string]bool, len(recs))
	for j := 0; ; j++ {
		more := false
		for i, r := range recs {
			if j >= len(r.Endpoints) {
				continue
			}
			more = true
			s := r.Endpoints[j]
			if seen[i] == nil {
				seen[i] = map[string]bool{}
			}
			if seen[i][s] {
				continue
			}
			seen[i][s] = true
			e, err := ParseEndpoint(s)
			if err != nil {
				note(i, s, "not probed: "+err.Error())
				continue
			}
			key := memKey(r, s)
			if f, ok := p.remembered(key, now); ok {
				note(i, s, fmt.Sprintf("skipped: unreachable %s ago (%s)", now.Sub(f.at).Round(time.Second), f.why))
				continue
			}
			trusted := onMachine[r.Peer]
			switch {
			case e.Network == "unix" && !local[r.Peer]:
				note(i, s, "skipped: a unix socket in a record from the network (only cells registered on this machine are dialled on a socket)")
				continue
			case e.Network == "tcp" && loopbackHost(e.Address) && !trusted:
				note(i, s, "skipped: a loopback endpoint, and the peer was not shown to run on this machine ("+notWhy[r.Peer]+")")
				continue
			}
			tk := targetKey(e, !trusted)
			t := targets[tk]
			if t == nil {
				if t = early.take(tk); t != nil {
					used++
					targets[tk] = t
					order = append(order, t)
				}
			}
			if t == nil {
				if budget <= 0 {
					note(i, s, fmt.Sprintf("skipped: over the %d probes of one find", MaxProbesPerFind))
					continue
				}
				budget--
				t = newProbeTarget(e, !trusted)
				targets[tk] = t
				order = append(order, t)
				go t.run(parent, p, timeout)
			}
			t.users = append(t.users, probeUse{inst: i, ep: s, key: key})
		}
		if !more {
			break
		}
	}

	for _, t := range order {
		<-t.done // each probe ends within its timeout; early ones started first
	}
	if m := n.metrics; m != nil {
		m.findProbes.WithLabelValues("early").Add(float64(used))
		m.findProbes.WithLabelValues("after").Add(float64(len(order) - used))
		m.findProbes.WithLabelValues("early_unused").Add(float64(early.started() - used))
	}
	for _, t := range order {
		for _, u := range t.users {
			in := &out[u.inst]
			if t.err != nil {
				note(u.inst, u.ep, t.err.Error())
				if t.remembers() {
					p.remember(u.key, failure{at: now, why: t.err.Error()})
				}
				continue
			}
			ms := float64(t.rtt.Microseconds()) / 1000
			if !in.Reachable || ms < in.LatencyMS {
				in.Reachable, in.LatencyMS, in.Best = true, ms, u.ep
			}
		}
	}
	for i := range out {
		out[i].Probe = why[i]
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Reachable != b.Reachable {
			return a.Reachable
		}
		if a.Reachable && a.LatencyMS != b.LatencyMS {
			return a.LatencyMS < b.LatencyMS
		}
		return a.Peer < b.Peer
	})
	return out
}

// trustedFirst orders recs with those delegated by one of the publishers
// first, keeping the order otherwise, so that they get their probes first.
func trustedFirst(recs []*record.Record, pubs []ed25519.PublicKey) {
	if len(pubs) == 0 {
		return
	}
	sort.SliceStable(recs, func(i, j int) bool { return delegatedBy(recs[i], pubs) && !delegatedBy(recs[j], pubs) })
}

// delegatedBy reports whether one of pubs delegated r.
func delegatedBy(r *record.Record, pubs []ed25519.PublicKey) bool {
	pub := r.Publisher()
	return pub != nil && slices.ContainsFunc(pubs, func(p ed25519.PublicKey) bool { return pub.Equal(p) })
}
