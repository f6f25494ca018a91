package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// fuzzHost adds a host to mn (which closes it).
func fuzzHost(f *testing.F, mn mocknet.Mocknet) host.Host {
	f.Helper()
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		f.Fatal(err)
	}
	// 100::/64 is the discard prefix: mocknet never touches a real network.
	h, err := mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip6/100::%x/tcp/4242", len(mn.Peers())+1)))
	if err != nil {
		f.Fatal(err)
	}
	return h
}

// FuzzAPIRequest sends arbitrary paths and query strings to the local API
// of a node (no network: finds end offline, manifest fetches find no
// provider). Every answer must be one of the API's status codes with a
// JSON body, and nothing may panic. The API is reachable only through a
// unix socket of mode 0600, but its input is still a request from another
// process.
func FuzzAPIRequest(f *testing.F) {
	pub := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, s := range [][2]string{
		{"/v1/status", ""},
		{"/v1/find", "name=acme/exchange"},
		{"/v1/find", url.Values{"name": {"acme/exchange"}, "publisher": {pub, pub}, "all": {"1"}, "timeout": {"50ms"}}.Encode()},
		{"/v1/find", "name=ACME/x&timeout=-1s"},
		{"/v1/find", "name=a/b&publisher=zz&timeout=1e9h"},
		{"/v1/find", "name=%ff%fe&name=a/b"},
		{"/v1/manifest", "cid=baf4bcfgqidw7b5cuprjlo5xgvnvveumwpttkc3i&hint=12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7&hint=x"},
		{"/v1/manifest", "cid=QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"},
		{"/v1/nothing", ""},
		{"//v1/find/../status", ";;&&=="},
	} {
		f.Add(s[0], s[1])
	}
	mn := mocknet.New()
	f.Cleanup(func() { mn.Close() })
	n, err := New(Config{Home: f.TempDir(), Host: fuzzHost(f, mn), API: true, NoRuntimeDir: true,
		DHT: dht.Config{Mode: dht.ModeServer, Flat: true, DisableAutoRefresh: true}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	h := n.api.srv.Handler
	f.Fuzz(func(t *testing.T, path, query string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL.Path, req.URL.RawQuery = path, query
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(ctx))
		switch rec.Code {
		case http.StatusOK, http.StatusBadRequest, http.StatusBadGateway, http.StatusServiceUnavailable:
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s?%s: %d with a body that is not JSON: %q", path, query, rec.Code, rec.Body.Bytes())
			}
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
		default:
			t.Fatalf("%s?%s: status %d", path, query, rec.Code)
		}
		if rec.Code == http.StatusOK && path == "/v1/find" {
			var res FindResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if _, err := record.ParseName(res.Name); err != nil {
				t.Fatalf("answered a find for the invalid name %q", res.Name)
			}
		}
	})
}
