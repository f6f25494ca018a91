package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ProbeTimeout is how long a find waits for one endpoint to answer.
const ProbeTimeout = 500 * time.Millisecond

// Endpoint is a parsed service endpoint: "host:port" (TCP) or "unix:/path".
type Endpoint struct {
	Network string // "tcp" or "unix"
	Address string // "host:port" or the socket path
}

// ParseEndpoint parses a service endpoint. A TCP endpoint needs a port (a
// service name is turned into its number); the host may be empty (":9000")
// to mean every interface. Otherwise the endpoint must be one a record may
// carry (record.CheckEndpoint): a unix socket path must be absolute.
func ParseEndpoint(s string) (Endpoint, error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if p == "" {
			return Endpoint{}, fmt.Errorf("node: endpoint %q: empty socket path", s)
		}
		if err := record.CheckEndpoint(s); err != nil {
			return Endpoint{}, fmt.Errorf("node: %w (want unix:/absolute/path)", err)
		}
		return Endpoint{Network: "unix", Address: p}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("node: endpoint %q: want HOST:PORT, :PORT or unix:PATH", s)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil || p == 0 {
		return Endpoint{}, fmt.Errorf("node: endpoint %q: bad port %q", s, port)
	}
	e := Endpoint{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(p))}
	if host != "" {
		if err := record.CheckEndpoint(e.Address); err != nil {
			return Endpoint{}, fmt.Errorf("node: %w", err)
		}
	}
	return e, nil
}

func (e Endpoint) String() string {
	if e.Network == "unix" {
		return "unix:" + e.Address
	}
	return e.Address
}

// Wildcard reports whether e is a TCP endpoint bound to all interfaces.
func (e Endpoint) Wildcard() bool {
	if e.Network != "tcp" {
		return false
	}
	host, _, _ := net.SplitHostPort(e.Address)
	return host == "" || host == "0.0.0.0" || host == "::"
}

// checkAddr is the address a health check dials: loopback for a wildcard.
func (e Endpoint) checkAddr() string {
	if !e.Wildcard() {
		return e.Address
	}
	host, port, _ := net.SplitHostPort(e.Address)
	if host == "::" {
		return net.JoinHostPort("::1", port)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// Probe dials endpoint once and returns how long the connection took. It
// gives up after timeout (0 means ProbeTimeout).
func Probe(ctx context.Context, endpoint string, timeout time.Duration) (time.Duration, error) {
	e, err := ParseEndpoint(endpoint)
	if err != nil {
		return 0, err
	}
	return e.probe(ctx, timeout)
}

func (e Endpoint) probe(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if timeout <= 0 {
		timeout = ProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	start := time.Now()
	c, err := d.DialContext(ctx, e.Network, e.checkAddr())
	if err != nil {
		return 0, err
	}
	rtt := time.Since(start)
	c.Close()
	return rtt, nil
}

// expand turns a wildcard endpoint into one endpoint per IP address the
// host is known by (its interface addresses and the addresses peers
// observed), public before private; loopback addresses only when there is
// nothing else, since they reach this machine only. Other endpoints are
// returned as they are.
func (e Endpoint) expand(addrs []ma.Multiaddr) []string {
	if !e.Wildcard() {
		return []string{e.String()}
	}
	_, port, _ := net.SplitHostPort(e.Address)
	var public, private, loop []string
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		ip, err := manet.ToIP(a)
		if err != nil {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		addr = addr.Unmap()
		if seen[addr] || addr.IsLinkLocalUnicast() || addr.IsUnspecified() || addr.IsMulticast() {
			continue
		}
		seen[addr] = true
		ep := net.JoinHostPort(addr.String(), port)
		switch {
		case addr.IsLoopback():
			loop = append(loop, ep)
		case addr.IsPrivate():
			private = append(private, ep)
		default:
			public = append(public, ep)
		}
	}
	out := append(public, private...)
	if len(out) == 0 {
		out = loop
	}
	if len(out) > 8 {
		out = out[:8]
	}
	if len(out) == 0 {
		return []string{e.checkAddr()}
	}
	return out
}
