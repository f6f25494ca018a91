package dht

import (
	"slices"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// TestLANAddrs: the LAN DHT drops the loopback addresses a lookup learns of
// a peer that has other addresses (dialling them waits on a closed local
// port before the real address is tried), and keeps them for a peer that
// listens on loopback alone.
func TestLANAddrs(t *testing.T) {
	addrs := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	for _, tc := range []struct{ in, want []ma.Multiaddr }{
		{
			in: addrs("/ip6/::1/udp/4001/quic-v1", "/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/10.77.0.9/udp/4001/quic-v1",
				"/ip4/127.0.0.1/tcp/4001", "/ip4/10.77.0.9/tcp/4001"),
			want: addrs("/ip4/10.77.0.9/udp/4001/quic-v1", "/ip4/10.77.0.9/tcp/4001"),
		},
		{
			in:   addrs("/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"),
			want: addrs("/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"),
		},
		{in: addrs("/ip4/192.168.1.5/tcp/4001"), want: addrs("/ip4/192.168.1.5/tcp/4001")},
		{in: nil, want: nil},
	} {
		if got := lanAddrs(tc.in); !slices.EqualFunc(got, tc.want, func(a, b ma.Multiaddr) bool { return a.Equal(b) }) {
			t.Errorf("lanAddrs(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
