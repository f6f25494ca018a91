package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// A peer whose process has exited answers a TCP dial with a reset at
// once, but a QUIC dial with nothing: no packet says that a UDP port is
// closed (the kernel's ICMP error does not reach quic-go's shared,
// unconnected socket). The swarm dials QUIC first and TCP 30 ms later on
// private networks, 250 ms later elsewhere (swarm.DefaultDialRanker), and
// then waits for every address, so each dead peer cost a dial its whole
// budget: the DHT's floor of 300 ms per peer in a lookup or a publish, the
// host's dial timeout elsewhere.
//
// goneDials turns the reset into an answer for the QUIC address too: when
// every TCP address a peer is known by on an IP has been refused, the
// process that listened there is gone, and the QUIC dials to that peer on
// that IP are cancelled with errPeerGone. A dead peer then costs the TCP
// delay plus one round trip. The rule needs every TCP address on the IP,
// not just the one refused, because a peer that restarted on new ports
// keeps its old addresses in peerstores for a while: the old TCP port
// refuses, the new one answers, and the new QUIC address must not be cut.
// A refusal counts for goneFor, the swarm's first dial backoff (after which
// the swarm dials the addresses again).
type goneDials struct {
	mu  sync.Mutex
	ps  peerstore.Peerstore // nil until the host exists
	net network.Network     // nil until the host exists (PeerGone)
	// quic holds the QUIC dials in flight, by peer and IP.
	quic map[goneKey]map[*quicDial]struct{}
	// refused holds, by peer and IP, when each TCP address was refused.
	refused map[goneKey]map[string]time.Time
	now     func() time.Time
}

// goneFor is how long a refused TCP address counts: the swarm's base
// backoff, for which it will not dial the address again anyway.
var goneFor = swarm.BackoffBase

// errPeerGone is why a QUIC dial was cut short. The swarm puts an address
// that failed with it into its dial backoff (it does not for
// context.Canceled), as it does with the refused TCP address.
var errPeerGone = errors.New("peer gone: every TCP address on this IP refused the connection")

type goneKey struct {
	p  peer.ID
	ip netip.Addr
}

type quicDial struct{ cancel context.CancelCauseFunc }

func newGoneDials() *goneDials {
	return &goneDials{
		quic:    make(map[goneKey]map[*quicDial]struct{}),
		refused: make(map[goneKey]map[string]time.Time),
		now:     time.Now,
	}
}

// setPeerstore gives goneDials the host's peerstore, where it looks up the
// peer's other TCP addresses.
func (g *goneDials) setPeerstore(ps peerstore.Peerstore) {
	g.mu.Lock()
	g.ps = ps
	g.mu.Unlock()
}

// setNetwork gives goneDials the host's network: its peerstore, and the
// open connections that PeerGone checks.
func (g *goneDials) setNetwork(n network.Network) {
	g.setPeerstore(n.Peerstore())
	g.mu.Lock()
	g.net = n
	g.mu.Unlock()
}

// PeerGone reports whether p's process is known to have exited: p has an
// open connection, and every plain TCP address the peerstore holds for p
// on the IPs of its connections refuses a TCP connect (a RST, one round
// trip). The DHT asks it about a peer whose request or query is slow
// (dht.Config.PeerGone): a peer killed while connected over QUIC leaves a
// connection that takes requests and answers nothing until it idles out,
// and no packet says so; its TCP port does. A refused address also counts
// for the QUIC dials to p (tcpRefused). A connect that succeeds, times out
// or fails otherwise means p may be alive: false. A successful connect is
// closed at once; the peer's listener sees a connection that ends before
// its handshake.
func (g *goneDials) PeerGone(ctx context.Context, p peer.ID) bool {
	g.mu.Lock()
	n := g.net
	g.mu.Unlock()
	if n == nil {
		return false
	}
	ips := map[netip.Addr]bool{}
	for _, c := range n.ConnsToPeer(p) {
		if k, ok := keyOf(p, c.RemoteMultiaddr()); ok {
			ips[k.ip] = true
		}
	}
	return g.refusedOn(ctx, p, ips)
}

// PeerLeft reports whether p's process at the IP of from (the remote
// address of a connection to p that has just closed) is known to have
// exited: every plain TCP address the peerstore holds for p on that IP
// refuses a TCP connect, as for PeerGone. The DHT asks it about a peer of
// its routing table whose last connection closed (dht.Config.PeerLeft): a
// peer that stopped closes its connections, and kad-dht would keep it in
// its table, and hand it out to every lookup, until a query to it failed.
func (g *goneDials) PeerLeft(ctx context.Context, p peer.ID, from ma.Multiaddr) bool {
	k, ok := keyOf(p, from)
	if !ok {
		return false
	}
	return g.refusedOn(ctx, p, map[netip.Addr]bool{k.ip: true})
}

// refusedOn dials every plain TCP address of p on ips at once and reports
// whether all of them refused; it is false when p has none there. Refused
// addresses also count for the QUIC dials to p (tcpRefused).
func (g *goneDials) refusedOn(ctx context.Context, p peer.ID, ips map[netip.Addr]bool) bool {
	g.mu.Lock()
	ps := g.ps
	g.mu.Unlock()
	if ps == nil || len(ips) == 0 {
		return false
	}
	var addrs []ma.Multiaddr
	for _, a := range ps.Addrs(p) {
		for ip := range ips {
			if isTCPOn(a, ip) {
				addrs = append(addrs, a)
				break
			}
		}
	}
	if len(addrs) == 0 {
		return false
	}
	refused := make(chan bool, len(addrs))
	for _, a := range addrs {
		go func() {
			na, err := manet.ToNetAddr(a)
			if err != nil {
				refused <- false
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", na.String())
			if err == nil {
				c.Close()
			}
			refused <- errors.Is(err, syscall.ECONNREFUSED)
		}()
	}
	gone := true
	for range addrs {
		if !<-refused {
			gone = false
		}
	}
	if gone {
		for _, a := range addrs {
			g.tcpRefused(p, a)
		}
	}
	return gone
}

// keyOf is a dial's peer and IP; ok is false for an address without an IP
// (the swarm resolves DNS names before it calls a transport).
func keyOf(p peer.ID, a ma.Multiaddr) (goneKey, bool) {
	ip, err := manet.ToIP(a)
	if err != nil {
		return goneKey{}, false
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return goneKey{}, false
	}
	return goneKey{p, addr.Unmap()}, true
}

// isTCPOn reports whether a is a plain TCP address (/ip4|ip6/…/tcp/…, as
// the TCP transport dials it) on ip.
func isTCPOn(a ma.Multiaddr, ip netip.Addr) bool {
	a, _ = peer.SplitAddr(a)
	if len(a) != 2 || a[1].Code() != ma.P_TCP {
		return false
	}
	k, ok := keyOf("", a)
	return ok && k.ip == ip
}

// tcpRefused records that raddr refused p's TCP dial and, if p has no TCP
// address on that IP that has not, cancels p's QUIC dials there.
func (g *goneDials) tcpRefused(p peer.ID, raddr ma.Multiaddr) {
	k, ok := keyOf(p, raddr)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	m := g.refused[k]
	if m == nil {
		m = make(map[string]time.Time)
		g.refused[k] = m
	}
	m[string(raddr.Bytes())] = now
	g.pruneLocked(now)
	if !g.goneLocked(k, now) {
		return
	}
	for d := range g.quic[k] {
		d.cancel(errPeerGone)
	}
}

// goneLocked reports whether every TCP address of k's peer on k's IP was
// refused within goneFor (and at least one was).
func (g *goneDials) goneLocked(k goneKey, now time.Time) bool {
	m := g.refused[k]
	if len(m) == 0 {
		return false
	}
	if g.ps == nil {
		return true
	}
	for _, a := range g.ps.Addrs(k.p) {
		if !isTCPOn(a, k.ip) {
			continue
		}
		if t, ok := m[string(a.Bytes())]; !ok || now.Sub(t) >= goneFor {
			return false
		}
	}
	return true
}

// pruneLocked forgets refusals older than goneFor.
func (g *goneDials) pruneLocked(now time.Time) {
	for k, m := range g.refused {
		for a, t := range m {
			if now.Sub(t) >= goneFor {
				delete(m, a)
			}
		}
		if len(m) == 0 {
			delete(g.refused, k)
		}
	}
}

// startQUIC registers a QUIC dial to k. It returns errPeerGone instead
// when k's TCP addresses have all been refused already.
func (g *goneDials) startQUIC(k goneKey, cancel context.CancelCauseFunc) (*quicDial, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	g.pruneLocked(now)
	if g.goneLocked(k, now) {
		return nil, errPeerGone
	}
	d := &quicDial{cancel: cancel}
	if g.quic[k] == nil {
		g.quic[k] = make(map[*quicDial]struct{})
	}
	g.quic[k][d] = struct{}{}
	return d, nil
}

func (g *goneDials) endQUIC(k goneKey, d *quicDial) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.quic[k], d)
	if len(g.quic[k]) == 0 {
		delete(g.quic, k)
	}
}

// goneTCP is libp2p's TCP transport that tells goneDials of refused
// dials. It embeds the transport, so the swarm still finds its optional
// interfaces (transport.DialUpdater, and the rest).
type goneTCP struct {
	*tcp.TcpTransport
	g *goneDials
}

// tcpTransport is the constructor for libp2p.Transport: its parameters are
// tcp.NewTCPTransport's, which the host's dependency injection supplies.
func (g *goneDials) tcpTransport(up transport.Upgrader, rm network.ResourceManager, shared *tcpreuse.ConnMgr) (*goneTCP, error) {
	t, err := tcp.NewTCPTransport(up, rm, shared)
	if err != nil {
		return nil, err
	}
	return &goneTCP{TcpTransport: t, g: g}, nil
}

func (t *goneTCP) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	return t.DialWithUpdates(ctx, raddr, p, nil)
}

func (t *goneTCP) DialWithUpdates(ctx context.Context, raddr ma.Multiaddr, p peer.ID, ch chan<- transport.DialUpdate) (transport.CapableConn, error) {
	c, err := t.TcpTransport.DialWithUpdates(ctx, raddr, p, ch)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		t.g.tcpRefused(p, raddr)
	}
	return c, err
}

// goneQUIC is libp2p's QUIC transport whose dials goneDials can cut short.
// quic.NewTransport returns an interface, so the optional interfaces the
// swarm looks for on it (io.Closer, ListenOrder) are forwarded by hand;
// TestGoneTransportsKeepInterfaces checks that none is lost.
type goneQUIC struct {
	transport.Transport
	g *goneDials
}

// quicTransport is the constructor for libp2p.Transport, with
// quic.NewTransport's parameters.
func (g *goneDials) quicTransport(key ic.PrivKey, cm *quicreuse.ConnManager, psk pnet.PSK, gater connmgr.ConnectionGater, rm network.ResourceManager) (*goneQUIC, error) {
	t, err := quic.NewTransport(key, cm, psk, gater, rm)
	if err != nil {
		return nil, err
	}
	return &goneQUIC{Transport: t, g: g}, nil
}

func (t *goneQUIC) Dial(ctx context.Context, raddr ma.Multiaddr, p peer.ID) (transport.CapableConn, error) {
	k, ok := keyOf(p, raddr)
	if !ok {
		return t.Transport.Dial(ctx, raddr, p)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d, err := t.g.startQUIC(k, cancel)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", raddr, err)
	}
	defer t.g.endQUIC(k, d)
	c, err := t.Transport.Dial(ctx, raddr, p)
	if err != nil && errors.Is(context.Cause(ctx), errPeerGone) {
		return nil, fmt.Errorf("dial %s: %w", raddr, errPeerGone)
	}
	return c, err
}

// ListenOrder forwards the QUIC transport's listen order (QUIC listens
// before the transports that share its port).
func (t *goneQUIC) ListenOrder() int {
	if o, ok := t.Transport.(swarm.OrderedListener); ok {
		return o.ListenOrder()
	}
	return 0
}

// Close closes the QUIC transport (the swarm closes transports that are
// io.Closers when the host closes).
func (t *goneQUIC) Close() error {
	if c, ok := t.Transport.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
