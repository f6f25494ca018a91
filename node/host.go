package node

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/x/rate"
)

// Connection manager watermarks: a public DHT server keeps up to 400
// connections and trims to 100, sparing connections younger than a minute.
const (
	connLow   = 100
	connHigh  = 400
	connGrace = time.Minute
)

// Dial timeouts, per address: the backstop for dials that carry no
// budget of their own. A peer that is gone answers nothing over QUIC (no
// packet says its port is closed), so a dial to it would last the whole
// timeout, but for the TCP dial beside it, which is refused at once and
// then cuts the QUIC dial short (goneDials). A machine that is down
// answers neither. The DHT's lookups and requests bound each dial by the
// network's measured latency (dht.Config.DialTimeout, see dialBudget);
// kad-dht's refresh and its check of each new peer, manifest fetches and
// the agent's dials do not, and with libp2p's defaults (5 s on private
// networks, 15 s elsewhere) each dead peer they met cost that long. A
// handshake takes a few round trips: 1 s is hundreds on a LAN, 5 s tens on
// the internet's longest paths.
const (
	localDialTimeout = time.Second
	dialTimeout      = 5 * time.Second
)

// newHost builds the libp2p host: TCP and QUIC with libp2p's default
// security (Noise, TLS) and muxers, the connection manager above, and a
// resource manager with libp2p's autoscaled defaults plus limits on our own
// protocols, and with libp2p's per-address connection limits lifted for
// private networks (privateNetworkLimits).
//
// The listen addresses are checked first (CheckListen), so that a bad one
// gives one clear error instead of libp2p's, and a fixed port that another
// process holds is refused: libp2p's TCP transport sets SO_REUSEPORT,
// with which a second process can bind a port the first one listens on,
// and then dials itself. refused, when not nil, counts what the resource
// manager refuses. The goneDials returned is the one the host's transports
// use; its PeerGone is the DHT's check of a slow peer. With metrics unset,
// libp2p's own metrics are not collected: they go to Prometheus's default
// registry, which only a node's metrics endpoints serve (see hostMetrics).
func newHost(sk crypto.PrivKey, listen []string, refused rcmgr.TraceReporter, metrics bool) (host.Host, *goneDials, error) {
	if len(listen) == 0 {
		listen = DefaultListen
	}
	if err := CheckListen(listen); err != nil {
		return nil, nil, err
	}
	if err := checkPortsFree(listen); err != nil {
		return nil, nil, err
	}
	cm, err := connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return nil, nil, err
	}
	rm, err := newResourceManager(refused)
	if err != nil {
		return nil, nil, err
	}
	gone := newGoneDials()
	opts := []libp2p.Option{
		libp2p.Identity(sk),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(gone.tcpTransport),
		libp2p.Transport(gone.quicTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.WithDialTimeout(dialTimeout),
		libp2p.SwarmOpts(swarm.WithDialTimeoutLocal(localDialTimeout)),
	}
	if !metrics {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		msg := err.Error()
		if strings.Contains(msg, "address already in use") {
			return nil, nil, fmt.Errorf("node: listen %s: address already in use (pick another port with --listen)", strings.Join(listen, ", "))
		}
		return nil, nil, fmt.Errorf("node: start libp2p host on %s: %w", strings.Join(listen, ", "), err)
	}
	gone.setNetwork(h.Network())
	return h, gone, nil
}

// hostMetrics says whether a node's libp2p host collects libp2p's metrics:
// only a node that serves them, on its local API or its metrics listener.
// A one-shot command's ephemeral node serves neither, and registering the
// collectors (and counting into them) was about a fifth of its host's
// start-up; in a process that runs a serving node beside ephemeral ones
// (an agent's finds), their counts would also be mixed into the node's.
func hostMetrics(cfg Config) bool { return cfg.API || cfg.Metrics != "" || !cfg.Ephemeral }

// newResourceManager is the host's resource manager: limits() and
// privateNetworkLimits(), reporting to refused when it is not nil.
func newResourceManager(refused rcmgr.TraceReporter) (network.ResourceManager, error) {
	opts := privateNetworkLimits()
	if refused != nil {
		opts = append(opts, rcmgr.WithTraceReporter(refused))
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits()), opts...)
}

// limits are libp2p's autoscaled defaults with per-protocol limits for the
// instances protocol (one short request per stream, so few concurrent
// streams per peer) and the git object protocol (responses up to tens of
// MiB, so a memory bound).
func limits() rcmgr.ConcreteLimitConfig {
	cfg := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&cfg)
	cfg.AddProtocolLimit(dht.ProtocolID,
		rcmgr.BaseLimit{Streams: 2048, StreamsInbound: 1024, StreamsOutbound: 1024, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{Streams: 1024, StreamsInbound: 512, StreamsOutbound: 512, Memory: 32 << 20})
	cfg.AddProtocolPeerLimit(dht.ProtocolID,
		rcmgr.BaseLimit{Streams: 48, StreamsInbound: 16, StreamsOutbound: 32, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{})
	cfg.AddProtocolLimit(gitobj.ObjectProtocol,
		rcmgr.BaseLimit{Streams: 256, StreamsInbound: 128, StreamsOutbound: 128, Memory: 256 << 20},
		rcmgr.BaseLimitIncrease{Streams: 128, StreamsInbound: 64, StreamsOutbound: 64, Memory: 64 << 20})
	cfg.AddProtocolPeerLimit(gitobj.ObjectProtocol,
		rcmgr.BaseLimit{Streams: 8, StreamsInbound: 4, StreamsOutbound: 4, Memory: 96 << 20},
		rcmgr.BaseLimitIncrease{})
	return cfg.AutoScale()
}

// privateNets are the address ranges of an operator's own network:
// RFC 1918, shared address space (RFC 6598, which overlay networks such
// as Tailscale use), IPv6 unique-local and link-local addresses, and
// loopback, which libp2p already exempts.
var privateNets = struct{ v4, v6 []netip.Prefix }{
	v4: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("169.254.0.0/16"),
	},
	v6: []netip.Prefix{
		netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fc00::/7"), netip.MustParsePrefix("fe80::/10"),
	},
}

// Connection rate of a private network, shared by all its addresses.
const (
	privateConnRate  = 100  // new connections per second
	privateConnBurst = 1000 // at once
)

// privateNetworkLimits lifts libp2p's per-address connection limits for
// peers on private networks. By default the resource manager lets one IPv4
// address hold 8 connections at once and open 16 in a burst, then one
// every 5 s: a guard for public servers against one host opening
// connections in bulk. Inside an operator's network one address is often
// many nodes (containers behind the host's NAT, a CI machine running a
// burst of one-shot finds, each a new identity and so a new connection),
// and the LAN DHT makes every node connect to many others; there the
// per-address limits refused connections that the node should take (the
// netns benchmark saw the eleventh of 20 cold finds from one address
// refused). So private ranges get no per-address count (the system-wide
// and per-peer limits still apply) and a rate shared by each range,
// privateConnRate with a burst of privateConnBurst. Public addresses keep
// libp2p's limits (its values, restated here because it does not export
// them).
func privateNetworkLimits() []rcmgr.Option {
	var v4, v6 []rcmgr.NetworkPrefixLimit
	var rates []rate.PrefixLimit
	for _, p := range privateNets.v4 {
		v4 = append(v4, rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt})
	}
	for _, p := range privateNets.v6 {
		v6 = append(v6, rcmgr.NetworkPrefixLimit{Network: p, ConnCount: math.MaxInt})
	}
	for _, p := range append(append([]netip.Prefix(nil), privateNets.v4...), privateNets.v6...) {
		lim := rate.Limit{RPS: privateConnRate, Burst: privateConnBurst}
		if p.Addr().IsLoopback() {
			lim = rate.Limit{} // unlimited, as libp2p has it
		}
		rates = append(rates, rate.PrefixLimit{Prefix: p, Limit: lim})
	}
	return []rcmgr.Option{
		rcmgr.WithNetworkPrefixLimit(v4, v6),
		rcmgr.WithConnRateLimiters(&rate.Limiter{
			NetworkPrefixLimits: rates,
			SubnetRateLimiter: rate.SubnetLimiter{
				IPv4SubnetLimits: []rate.SubnetLimit{{PrefixLength: 32, Limit: rate.Limit{RPS: 0.2, Burst: 16}}},
				IPv6SubnetLimits: []rate.SubnetLimit{
					{PrefixLength: 56, Limit: rate.Limit{RPS: 0.2, Burst: 16}},
					{PrefixLength: 48, Limit: rate.Limit{RPS: 0.5, Burst: 80}},
				},
				GracePeriod: time.Minute,
			},
		}),
	}
}
