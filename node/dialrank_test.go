package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

func delays(t *testing.T, ranked []network.AddrDelay) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for _, a := range ranked {
		out[a.Addr.String()] = a.Delay
	}
	return out
}

func addrs(t *testing.T, ss ...string) []ma.Multiaddr {
	t.Helper()
	var out []ma.Multiaddr
	for _, s := range ss {
		out = append(out, ma.StringCast(s))
	}
	return out
}

func TestDialRankerPrivateTCPWaitsForQUIC(t *testing.T) {
	for _, c := range [][2]string{
		{"/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/127.0.0.1/tcp/4001"},
		{"/ip4/10.0.0.5/udp/4001/quic-v1", "/ip4/10.0.0.5/tcp/4001"},
		{"/ip6/fd00::5/udp/4001/quic-v1", "/ip6/fd00::5/tcp/4001"},
	} {
		d := delays(t, dialRanker(addrs(t, c[0], c[1])))
		if d[c[0]] != 0 {
			t.Errorf("%s: QUIC delayed %v", c[0], d[c[0]])
		}
		if d[c[1]] < privateTCPDelay {
			t.Errorf("%s beside %s: TCP delayed %v, want at least %v", c[1], c[0], d[c[1]], privateTCPDelay)
		}
	}
}

func TestDialRankerOtherwiseDefault(t *testing.T) {
	for _, set := range [][]string{
		{"/ip4/10.0.0.5/tcp/4001"}, // TCP alone: at once
		{"/ip4/10.0.0.5/tcp/4001", "/ip6/fd00::5/tcp/4001"},
		{"/ip4/1.2.3.4/udp/4001/quic-v1", "/ip4/1.2.3.4/tcp/4001"}, // public: libp2p's delays already
		{"/ip4/1.2.3.4/udp/4001/quic-v1", "/ip4/10.0.0.5/udp/4001/quic-v1"},
		{"/ip4/10.0.0.5/tcp/4001/ws"},
	} {
		got, want := delays(t, dialRanker(addrs(t, set...))), delays(t, swarm.DefaultDialRanker(addrs(t, set...)))
		if len(got) != len(want) {
			t.Fatalf("%v: ranked %v, default %v", set, got, want)
		}
		for a, d := range want {
			if got[a] != d {
				t.Errorf("%v: %s delayed %v, libp2p's default %v", set, a, got[a], d)
			}
		}
	}
	if d := delays(t, dialRanker(addrs(t, "/ip4/10.0.0.5/tcp/4001")))["/ip4/10.0.0.5/tcp/4001"]; d != 0 {
		t.Errorf("a peer with TCP alone waits %v", d)
	}
}
