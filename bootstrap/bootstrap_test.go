package bootstrap

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"
)

func randID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func addrs(ss ...string) []ma.Multiaddr {
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		out[i] = ma.StringCast(s)
	}
	return out
}

func addrStrings(as []ma.Multiaddr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

func TestSelect(t *testing.T) {
	const a1 = "/ip4/192.0.2.1/tcp/4001/p2p/12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5"
	const a2 = "/dnsaddr/example.org"
	tests := []struct {
		name       string
		flags      []string
		env        string
		wantSource string
		wantAddrs  []string
		wantErr    []string // substrings of the error
	}{
		{name: "default", wantSource: SourceDefault, wantAddrs: []string{DefaultAddr}},
		{name: "blank flag and env fall back to default", flags: []string{" ", ","}, env: " , ", wantSource: SourceDefault, wantAddrs: []string{DefaultAddr}},
		{name: "env replaces default", env: " " + a1 + " ,, " + a2 + " ", wantSource: SourceEnv, wantAddrs: []string{a1, a2}},
		{name: "flag replaces env", flags: []string{a2}, env: a1, wantSource: SourceFlag, wantAddrs: []string{a2}},
		{name: "flag values split on commas", flags: []string{a1 + "," + a2, ""}, wantSource: SourceFlag, wantAddrs: []string{a1, a2}},
		{name: "flag none", flags: []string{"none"}, env: a1, wantSource: SourceNone},
		{name: "env none", env: " NONE ", wantSource: SourceNone},
		{name: "bad flag", flags: []string{a1, "bogus"}, env: a2, wantErr: []string{`"bogus"`, "from flag"}},
		{name: "bad env", env: a1 + ",/ip4/999.1.1.1", wantErr: []string{`"/ip4/999.1.1.1"`, "from env " + EnvVar}},
		{name: "none with addresses", env: a1 + ",none", wantErr: []string{`"none"`, "from env"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Select(tc.flags, tc.env)
			if tc.wantErr != nil {
				if !errors.Is(err, ErrInvalidAddr) {
					t.Fatalf("err = %v, want ErrInvalidAddr", err)
				}
				for _, s := range tc.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("err %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Source != tc.wantSource {
				t.Errorf("Source = %q, want %q", l.Source, tc.wantSource)
			}
			if got := addrStrings(l.Addrs); !slices.Equal(got, tc.wantAddrs) {
				t.Errorf("Addrs = %q, want %q", got, tc.wantAddrs)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	id1, id2, id3 := randID(t), randID(t), randID(t)
	p2p := func(transport string, id peer.ID) string { return transport + "/p2p/" + id.String() }
	mock := &madns.MockResolver{TXT: map[string][]string{
		"_dnsaddr.cell.network": {
			"dnsaddr=" + p2p("/ip4/192.0.2.1/tcp/4001", id1),
			"dnsaddr=" + p2p("/ip4/192.0.2.1/udp/4001/quic-v1", id1),
			"dnsaddr=" + p2p("/dns4/b.cell.network/tcp/4001", id2),
			"unrelated txt record",
		},
		"_dnsaddr.nested.example": {"dnsaddr=/dnsaddr/leaf.example"},
		"_dnsaddr.leaf.example":   {"dnsaddr=" + p2p("/ip6/2001:db8::1/tcp/4001", id3)},
		"_dnsaddr.loop.example":   {"dnsaddr=/dnsaddr/loop.example"},
		"_dnsaddr.bad.example":    {"dnsaddr=/ip4/192.0.2.9/tcp/4001"},
	}}
	r, err := madns.NewResolver(madns.WithDefaultResolver(mock))
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		id    peer.ID
		addrs []string
	}
	tests := []struct {
		name        string
		addrs       []string
		want        []want
		wantErr     []string // substrings; nil means no error
		wantNoPeers bool     // error wraps ErrNoPeers
		wantBad     bool     // error wraps ErrInvalidAddr
	}{
		{
			name:  "dnsaddr to two peers",
			addrs: []string{DefaultAddr},
			want: []want{
				{id1, []string{"/ip4/192.0.2.1/tcp/4001", "/ip4/192.0.2.1/udp/4001/quic-v1"}},
				{id2, []string{"/dns4/b.cell.network/tcp/4001"}},
			},
		},
		{
			name:  "direct and resolved addresses merge",
			addrs: []string{p2p("/ip4/198.51.100.7/tcp/1", id2), DefaultAddr, p2p("/ip4/192.0.2.1/tcp/4001", id1)},
			want: []want{
				{id2, []string{"/ip4/198.51.100.7/tcp/1", "/dns4/b.cell.network/tcp/4001"}},
				{id1, []string{"/ip4/192.0.2.1/tcp/4001", "/ip4/192.0.2.1/udp/4001/quic-v1"}},
			},
		},
		{
			name:  "dnsaddr with peer suffix",
			addrs: []string{p2p(DefaultAddr, id2)},
			want:  []want{{id2, []string{"/dns4/b.cell.network/tcp/4001"}}},
		},
		{
			name:  "nested dnsaddr",
			addrs: []string{"/dnsaddr/nested.example"},
			want:  []want{{id3, []string{"/ip6/2001:db8::1/tcp/4001"}}},
		},
		{
			name:    "address without peer ID",
			addrs:   []string{"/ip4/192.0.2.5/tcp/4001", DefaultAddr},
			want:    []want{{id1, nil}, {id2, nil}},
			wantErr: []string{"/ip4/192.0.2.5/tcp/4001", "/p2p/<peer-id>"},
			wantBad: true,
		},
		{
			name:        "only a peer ID",
			addrs:       []string{"/p2p/" + id1.String()},
			wantErr:     []string{"/p2p/" + id1.String()},
			wantNoPeers: true,
			wantBad:     true,
		},
		{
			name:        "resolved address without peer ID",
			addrs:       []string{"/dnsaddr/bad.example"},
			wantErr:     []string{"/ip4/192.0.2.9/tcp/4001 (from /dnsaddr/bad.example)"},
			wantNoPeers: true,
			wantBad:     true,
		},
		{
			name:        "no records",
			addrs:       []string{"/dnsaddr/missing.example"},
			wantErr:     []string{"/dnsaddr/missing.example", "no dnsaddr records"},
			wantNoPeers: true,
		},
		{
			name:        "dnsaddr loop",
			addrs:       []string{"/dnsaddr/loop.example"},
			wantErr:     []string{"more than 32 dnsaddr lookups"},
			wantNoPeers: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := List{Addrs: addrs(tc.addrs...), Source: SourceFlag}.Resolve(t.Context(), r)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, s := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("err = %v, want it to contain %q", err, s)
				}
			}
			if errors.Is(err, ErrNoPeers) != tc.wantNoPeers {
				t.Errorf("errors.Is(err, ErrNoPeers) = %v, want %v", !tc.wantNoPeers, tc.wantNoPeers)
			}
			if errors.Is(err, ErrInvalidAddr) != tc.wantBad {
				t.Errorf("errors.Is(err, ErrInvalidAddr) = %v, want %v", !tc.wantBad, tc.wantBad)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d peers %v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				if got[i].ID != w.id {
					t.Errorf("peer %d = %s, want %s", i, got[i].ID, w.id)
				}
				if w.addrs != nil && !slices.Equal(addrStrings(got[i].Addrs), w.addrs) {
					t.Errorf("peer %d addrs = %q, want %q", i, addrStrings(got[i].Addrs), w.addrs)
				}
			}
		})
	}

	t.Run("empty list", func(t *testing.T) {
		got, err := List{Source: SourceNone}.Resolve(t.Context(), r)
		if got != nil || err != nil {
			t.Errorf("Resolve() = %v, %v; want nil, nil", got, err)
		}
	})
}

func TestStore(t *testing.T) {
	ids := make([]peer.ID, 5)
	for i := range ids {
		ids[i] = randID(t)
	}
	ai := func(i int, as ...string) peer.AddrInfo { return peer.AddrInfo{ID: ids[i], Addrs: addrs(as...)} }
	const (
		x = "/ip4/192.0.2.1/tcp/1"
		y = "/ip4/192.0.2.2/udp/2/quic-v1"
		z = "/ip6/2001:db8::3/tcp/3"
	)
	tests := []struct {
		name  string
		max   int
		saves [][]peer.AddrInfo
		want  []peer.AddrInfo
	}{
		{name: "round trip", saves: [][]peer.AddrInfo{{ai(0, x, y), ai(1, z)}}, want: []peer.AddrInfo{ai(0, x, y), ai(1, z)}},
		{
			name:  "most recent first",
			saves: [][]peer.AddrInfo{{ai(0, x), ai(1, x)}, {ai(2, y)}},
			want:  []peer.AddrInfo{ai(2, y), ai(0, x), ai(1, x)},
		},
		{
			name:  "dedupe moves peer up and merges addresses",
			saves: [][]peer.AddrInfo{{ai(0, x), ai(1, x, y)}, {ai(1, z, x), ai(1, y)}},
			want:  []peer.AddrInfo{ai(1, z, x, y), ai(0, x)},
		},
		{
			name:  "cap keeps newest",
			max:   3,
			saves: [][]peer.AddrInfo{{ai(0, x), ai(1, x)}, {ai(2, x), ai(3, x), ai(4, x)}},
			want:  []peer.AddrInfo{ai(2, x), ai(3, x), ai(4, x)},
		},
		{
			name:  "peers without ID or address ignored",
			saves: [][]peer.AddrInfo{{ai(0), {Addrs: addrs(x)}, ai(1, y)}},
			want:  []peer.AddrInfo{ai(1, y)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "home", "peers.json")
			s := NewStore(path)
			s.Max = tc.max
			if got, err := s.Load(); got != nil || err != nil {
				t.Fatalf("Load of missing file = %v, %v; want nil, nil", got, err)
			}
			for _, peers := range tc.saves {
				if err := s.Save(peers); err != nil {
					t.Fatal(err)
				}
			}
			got, err := NewStore(path).Load()
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Load() = %v\nwant     %v", got, tc.want)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Errorf("directory holds %d files, want only peers.json", len(entries))
			}
		})
	}
}

func TestStoreCorrupt(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"not json", "{\"version\":1,\"peers\":["},
		{"empty", ""},
		{"wrong shape", `{"version":1,"peers":{"id":"x"}}`},
		{"no version", `{"peers":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "peers.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s := NewStore(path)
			_, loadErr := s.Load()
			saveErr := s.Save([]peer.AddrInfo{{ID: randID(t), Addrs: addrs("/ip4/192.0.2.1/tcp/1")}})
			for _, err := range []error{loadErr, saveErr} {
				if !errors.Is(err, ErrCorruptStore) || !strings.Contains(err.Error(), path) {
					t.Errorf("err = %v, want ErrCorruptStore naming %s", err, path)
				}
			}
			if data, err := os.ReadFile(path); err != nil || !bytes.Equal(data, []byte(tc.content)) {
				t.Errorf("file changed to %q (err %v)", data, err)
			}
		})
	}
}

func newHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// closedAddr returns a loopback TCP address nothing listens on.
func closedAddr(t *testing.T) ma.Multiaddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
}

// silentAddr returns a loopback TCP address that accepts connections and
// never answers, so a dial to it times out.
func silentAddr(t *testing.T) ma.Multiaddr {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port))
}

func TestConnect(t *testing.T) {
	self, a, b := newHost(t), newHost(t), newHost(t)
	info := func(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }
	dead := peer.AddrInfo{ID: randID(t), Addrs: []ma.Multiaddr{closedAddr(t)}}
	dead2 := peer.AddrInfo{ID: randID(t), Addrs: []ma.Multiaddr{closedAddr(t)}}
	silent := peer.AddrInfo{ID: randID(t), Addrs: []ma.Multiaddr{silentAddr(t)}}
	tests := []struct {
		name              string
		primary, fallback []peer.AddrInfo
		want              []peer.ID // got must be a non-empty subset of these
		wantErr           []string  // substrings; non-nil means ErrNoPeers expected
	}{
		{name: "primary", primary: []peer.AddrInfo{info(a), dead}, fallback: []peer.AddrInfo{info(b)}, want: []peer.ID{a.ID(), b.ID()}},
		{name: "fallback when primary unreachable", primary: []peer.AddrInfo{dead}, fallback: []peer.AddrInfo{info(b)}, want: []peer.ID{b.ID()}},
		{name: "fallback when primary empty", fallback: []peer.AddrInfo{info(a), info(b)}, want: []peer.ID{a.ID(), b.ID()}},
		{name: "own ID skipped", primary: []peer.AddrInfo{info(self)}, fallback: []peer.AddrInfo{info(a)}, want: []peer.ID{a.ID()}},
		{
			name:    "all fail",
			primary: []peer.AddrInfo{dead, info(self)}, fallback: []peer.AddrInfo{dead2, silent},
			wantErr: []string{
				dead.ID.String() + ": ", dead2.ID.String() + ": ", "refused",
				self.ID().String() + ": is this host", silent.ID.String() + ": timed out",
			},
		},
		{name: "nothing to dial", wantErr: []string{"no bootstrap peers given"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Connect(t.Context(), self, tc.primary, tc.fallback, 500*time.Millisecond)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, ErrNoPeers) {
				t.Fatalf("err = %v, want ErrNoPeers", err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err %q does not contain %q", err, s)
				}
			}
			if tc.wantErr == nil && len(got) == 0 {
				t.Errorf("connected to nothing, want some of %v", tc.want)
			}
			for _, id := range got {
				if !slices.Contains(tc.want, id) {
					t.Errorf("connected to %v, want a subset of %v", got, tc.want)
				}
			}
		})
	}
	// A bootstrap peer that never answers does not hold up a peer seen
	// before: Connect returns with it, long before the silent dial's
	// timeout (an hour here).
	t.Run("silent primary", func(t *testing.T) {
		silent := peer.AddrInfo{ID: randID(t), Addrs: []ma.Multiaddr{silentAddr(t)}}
		done := make(chan []peer.ID, 1)
		go func() {
			got, _ := Connect(t.Context(), self, []peer.AddrInfo{silent}, []peer.AddrInfo{info(b)}, time.Hour)
			done <- got
		}()
		// Waiting for the silent peer would take the hour: the test's
		// -timeout fails it long before.
		if got := <-done; !slices.Equal(got, []peer.ID{b.ID()}) {
			t.Errorf("connected to %v, want %v", got, b.ID())
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := Connect(ctx, self, []peer.AddrInfo{dead}, nil, 0)
		if !errors.Is(err, ErrNoPeers) || !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want ErrNoPeers and context.Canceled", err)
		}
	})
}

// TestConnectDoesNotWaitForIdentify: Connect returns once the handshake
// is done. The peer here never answers identify; a Connect that waited
// for it would wait out its whole timeout.
func TestConnectDoesNotWaitForIdentify(t *testing.T) {
	h, mute := newHost(t), newHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mute.SetStreamHandler(identify.ID, func(s network.Stream) { <-ctx.Done(); _ = s.Reset() })
	got, err := Connect(context.Background(), h, []peer.AddrInfo{{ID: mute.ID(), Addrs: mute.Addrs()}}, nil, time.Minute)
	if err != nil || len(got) != 1 || got[0] != mute.ID() {
		t.Fatalf("Connect: %v, %v", got, err)
	}
	if protos, _ := h.Peerstore().GetProtocols(mute.ID()); len(protos) != 0 {
		t.Fatalf("the peer was identified (%v): the test needs one whose identify never ends", protos)
	}
}
