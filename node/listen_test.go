package node

import (
	"errors"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want string // "" means accepted
	}{
		{"/ip4/0.0.0.0/tcp/4001", ""},
		{"/ip4/127.0.0.1/udp/0/quic-v1", ""},
		{"/ip6/::/udp/0/quic-v1/webtransport", ""},
		{"/dns4/node.example.com/tcp/4001", ""},
		{"garbage", "must begin with /"},
		{"/ip4/127.0.0.1/udp/4001/quic", "old QUIC draft"},
		{"/ip4/127.0.0.1", "want /ip4|/ip6"},
		{"/ip4/127.0.0.1/udp/4001", "want /ip4|/ip6"},
		{"/tcp/4001", "want /ip4|/ip6"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := CheckListen([]string{tc.addr})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrBadListen) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want ErrBadListen saying %q", err, tc.want)
			}
		})
	}
}

// TestPortClash: a second node asked to listen on the TCP port a first
// node (whose libp2p transport sets SO_REUSEPORT) listens on is refused
// with a clear error, instead of sharing the port and dialling itself.
// The same for a QUIC port.
func TestPortClash(t *testing.T) {
	first, err := New(Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for _, a := range first.Host().Network().ListenAddresses() {
		if _, err := a.ValueForProtocol(ma.P_IP4); err != nil {
			continue // the relay's /p2p-circuit
		}
		t.Run(a.String(), func(t *testing.T) {
			_, err := New(Config{Home: t.TempDir(), Listen: []string{a.String()}})
			if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "held by another process") {
				t.Fatalf("second node on %s: %v", a, err)
			}
		})
	}
	if err := checkPortsFree([]string{"/ip4/127.0.0.1/tcp/0"}); err != nil {
		t.Fatal(err)
	}
}
