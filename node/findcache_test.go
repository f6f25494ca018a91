package node

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The local API answers a repeated find from its last result, says how old
// it is, and refreshes it in the background, so a new instance shows up
// while a client keeps polling.
func TestAPIFindCache(t *testing.T) {
	c := newCluster(t, nil)
	home := t.TempDir()
	n, err := New(Config{Home: home, API: true, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: t.TempDir(),
		Bootstrap: []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}, DHT: dht.Config{Mode: dht.ModeServer}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	announce(t, c.node(nil, ""), "acme/cached", service(t).Addr().String())

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(home, APISocket))
	}}}
	find := func(header ...string) (int, time.Duration) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://cellnode/v1/find?name=acme/cached", nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(header) > 0 {
			req.Header.Set("Cache-Control", header[0])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res FindResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			t.Fatal(err)
		}
		ms, err := strconv.ParseFloat(resp.Header.Get("X-Cellnode-Age-Ms"), 64)
		if err != nil {
			t.Fatalf("no age header: %v", resp.Header)
		}
		return len(res.Instances), time.Duration(ms * float64(time.Millisecond))
	}
	waitFor(t, "the first instance", func() bool { got, _ := find(); return got == 1 })
	if _, age := find(); age == 0 {
		t.Fatal("a repeated find was not answered from the cache")
	}
	announce(t, c.node(nil, ""), "acme/cached", service(t).Addr().String())
	waitFor(t, "the second instance through the refreshed cache", func() bool { got, age := find(); return got == 2 && age < findMaxAge })

	// A client that asks for no-cache gets a find of its own at once: the
	// third instance, which the cached result (from just before it was
	// announced) does not hold.
	if got, _ := find(); got != 2 {
		t.Fatalf("cached find: %d instances, want 2", got)
	}
	announce(t, c.node(nil, ""), "acme/cached", service(t).Addr().String())
	if got, age := find("no-cache"); got != 3 || age != 0 {
		t.Fatalf("no-cache find: %d instances, age %v; want the 3 of a fresh find", got, age)
	}
	if got, age := find(); got != 3 || age >= findMaxAge {
		t.Fatalf("find after a no-cache one: %d instances, age %v; want its result", got, age)
	}
}
