package dht

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	ma "github.com/multiformats/go-multiaddr"
)

func TestIPGroup(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"/ip4/45.33.1.2/tcp/4001", "45.33.0.0/16"},
		{"/ip4/45.33.200.9/udp/4001/quic-v1", "45.33.0.0/16"},
		{"/ip4/45.34.1.2/tcp/4001", "45.34.0.0/16"},
		{"/ip6/2600:3c00::1/tcp/4001", "2600:3c00::/32"},
		{"/ip4/127.0.0.1/tcp/4001", ""},
		{"/ip4/192.168.1.5/tcp/4001", "192.168.1.5/32"},
		{"/ip4/10.0.0.1/tcp/4001", "10.0.0.1/32"},
		{"/ip4/10.0.0.2/udp/4001/quic-v1", "10.0.0.2/32"},
		{"/ip6/fd00::1:2:3:4/tcp/4001", "fd00::/64"},
		{"/ip4/169.254.3.4/tcp/4001", "169.254.3.4/32"},
		{"/ip6/::1/tcp/4001", ""},
		{"/ip6/100::1/tcp/4242", ""},
		{"/dns4/cell.network/tcp/4001", ""},
	} {
		if got := ipGroup(ma.StringCast(tc.addr)); got != tc.want {
			t.Errorf("ipGroup(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// diverse keeps at most perGroup peers of one /16 among the closest, and
// leaves peers without a public address alone.
func TestDiverse(t *testing.T) {
	clk := &clock{t: time.Now()}
	d := testNetwork(t, 1, clk)[0].dht
	ps := d.host.Peerstore()
	key := kb.ConvertKey(record.Key("acme/exchange"))
	var sybils, honest, local []peer.ID
	for i := range 12 {
		p, err := test.RandPeerID()
		if err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			sybils = append(sybils, p)
			ps.AddAddr(p, ma.StringCast(fmt.Sprintf("/ip4/45.33.%d.1/tcp/4001", i)), time.Hour)
		case 1:
			honest = append(honest, p)
			ps.AddAddr(p, ma.StringCast(fmt.Sprintf("/ip4/%d.7.0.1/tcp/4001", 11+i)), time.Hour)
		default:
			local = append(local, p)
			ps.AddAddr(p, ma.StringCast("/ip4/127.0.0.1/tcp/4001"), time.Hour)
		}
	}
	all := append(append(append([]peer.ID{}, sybils...), honest...), local...)
	got := d.diverse(key, len(all), all, sybils) // a peer in both lists counts once
	if len(got) != len(all)-len(sybils)+perGroup {
		t.Fatalf("diverse kept %d of %d peers", len(got), len(all))
	}
	n := 0
	for i, p := range got {
		for _, s := range sybils {
			if p == s {
				n++
			}
		}
		if i > 0 && closer(key, kb.ConvertPeerID(p), kb.ConvertPeerID(got[i-1])) {
			t.Fatal("diverse is not closest first")
		}
	}
	if n != perGroup {
		t.Fatalf("%d peers of one /16 kept, want %d", n, perGroup)
	}
	if got := d.diverse(key, 3, all, nil); len(got) != 3 {
		t.Fatalf("diverse(3) returned %d", len(got))
	}
	// The lookup's closest come first; heard-of peers only fill places
	// the group limit left.
	got = d.diverse(key, 4, sybils, honest)
	n = 0
	for _, p := range got {
		if slices.Contains(sybils, p) {
			n++
		}
	}
	if len(got) != 4 || n != perGroup {
		t.Fatalf("diverse(sybils, honest) = %d peers, %d Sybils", len(got), n)
	}
	if got := d.diverse(key, 2, honest, sybils); slices.ContainsFunc(got, func(p peer.ID) bool { return slices.Contains(sybils, p) }) {
		t.Fatal("a heard-of peer took a place the closest could fill")
	}
}
