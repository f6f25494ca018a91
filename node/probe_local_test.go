package node

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Nodes on one machine that listen on every interface often connect over
// its LAN address, not loopback: such a peer is on this machine all the
// same, and its loopback endpoints are probed.
func TestOnThisMachineOverOwnAddress(t *testing.T) {
	var own net.IP
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			own = n.IP
			break
		}
	}
	if own == nil {
		t.Skip("no non-loopback IPv4 address on this machine")
	}
	start := func() *Node {
		n, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/0.0.0.0/tcp/0"}, NoRuntimeDir: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	a, b := start(), start()
	var lan []ma.Multiaddr
	for _, addr := range b.Host().Addrs() {
		if ip, err := addr.ValueForProtocol(ma.P_IP4); err == nil && ip == own.String() {
			lan = append(lan, addr)
		}
	}
	if len(lan) == 0 {
		t.Skipf("node listens on %v, none on %s", b.Host().Addrs(), own)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Host().Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: lan}); err != nil {
		t.Fatal(err)
	}
	if ok, why, _ := a.onThisMachine(ctx, b.ID()); !ok {
		t.Fatalf("a peer connected from this machine's own address %s is not on this machine: %s", own, why)
	}
}
