package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// ErrBadListen is returned (wrapped) by CheckListen, and by New, for a
// listen address this node cannot listen on.
var ErrBadListen = errors.New("node: bad listen address")

// ErrPortInUse is returned (wrapped) by New when another process listens
// on a fixed port of a listen address.
var ErrPortInUse = errors.New("node: port in use")

// CheckListen checks that every address is a multiaddr a node can listen
// on: /ip4 or /ip6 (or /dns*) followed by /tcp/PORT or /udp/PORT/quic-v1
// (with /webtransport after it, optionally). The old QUIC draft
// (/udp/PORT/quic), which libp2p no longer speaks, gets its own message.
func CheckListen(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("%w %q: %v (want, for example, /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1)", ErrBadListen, s, err)
		}
		if _, err := a.ValueForProtocol(ma.P_QUIC); err == nil {
			return fmt.Errorf("%w %s: /quic is the old QUIC draft, which libp2p no longer speaks; use /quic-v1", ErrBadListen, s)
		}
		var ip, port, transport bool
		ma.ForEach(a, func(c ma.Component) bool {
			switch c.Protocol().Code {
			case ma.P_IP4, ma.P_IP6, ma.P_DNS, ma.P_DNS4, ma.P_DNS6:
				ip = true
			case ma.P_TCP:
				port, transport = true, true
			case ma.P_UDP:
				port = true
			case ma.P_QUIC_V1:
				transport = true
			}
			return true
		})
		if !ip || !port || !transport {
			return fmt.Errorf("%w %s: want /ip4|/ip6/ADDR followed by /tcp/PORT or /udp/PORT/quic-v1", ErrBadListen, s)
		}
	}
	return nil
}

// checkPortsFree refuses listen addresses whose fixed port another
// process already holds. It binds each one briefly, without SO_REUSEPORT
// (which libp2p's TCP transport sets, and with which the kernel would let
// a second process share the port), and releases it at once. Port 0 is
// always free.
func checkPortsFree(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			continue // CheckListen reported it
		}
		network, hostport, err := manet.DialArgs(a)
		if err != nil {
			continue
		}
		_, p, err := net.SplitHostPort(hostport)
		if err != nil {
			continue
		}
		if n, _ := strconv.Atoi(p); n == 0 {
			continue
		}
		var closeFn func() error
		switch network {
		case "tcp", "tcp4", "tcp6":
			var ln net.Listener
			if ln, err = net.Listen(network, hostport); err == nil {
				closeFn = ln.Close
			}
		case "udp", "udp4", "udp6":
			var pc net.PacketConn
			if pc, err = net.ListenPacket(network, hostport); err == nil {
				closeFn = pc.Close
			}
		default:
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: listen %s: address already in use: %s port %s is held by another process (a cellnode bootstrap or run on this machine?); pick another port with --listen", ErrPortInUse, s, network[:3], p)
		}
		if err != nil {
			return fmt.Errorf("%w %s: %w", ErrBadListen, s, err)
		}
		_ = closeFn()
	}
	return nil
}
