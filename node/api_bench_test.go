package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkAPIFind is the warm find of internal/bench/loopback's row a in
// one process: GET /v1/find on a node's local API over a real unix socket
// (a keep-alive client, as node.Client and the loopback harness use), the
// node one of benchNet's finders. Sub-benchmarks:
//
//   - hit: back-to-back finds, each answered from the API's find cache
//     (findFresh not yet passed, so no refresh starts);
//   - rotate: the loopback harness's pattern: finds in turn over 6 nodes'
//     APIs after their caches emptied (findMaxAge), so each node's first
//     find is a miss (a network find) and the rest hits;
//   - fresh: "Cache-Control: no-cache", a network find each.
//
// Each reports p50/p95/p99 in ms; the body is read whole, not decoded.
//
//	go test -run '^$' -bench APIFind -benchtime 200x ./node/
func BenchmarkAPIFind(b *testing.B) {
	bn := newBenchNet(b)
	const nAPI = 6
	clients := make([]*http.Client, nAPI)
	for i := range nAPI {
		path := filepath.Join(sockDir(b), "api.sock")
		s, err := startAPI(bn.finders[i], path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.close)
		clients[i] = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost: 4,
		}}
	}
	find := func(b *testing.B, hc *http.Client, fresh bool) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		q := url.Values{"name": {benchCell}, "timeout": {"10s"}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cellnode/v1/find?"+q.Encode(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if fresh {
			req.Header.Set("Cache-Control", "no-cache")
		}
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		d := time.Since(start)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatal(err, resp.Status)
		}
		return d
	}
	for _, hc := range clients {
		find(b, hc, true) // warm: connection open, cache filled
	}
	b.Run("hit", func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		find(b, clients[0], true)
		last := time.Now()
		for range b.N {
			if time.Since(last) > findFresh/2 {
				b.StopTimer()
				find(b, clients[0], true)
				last = time.Now()
				b.StartTimer()
			}
			lat = append(lat, find(b, clients[0], false))
		}
		lat.report(b, "")
	})
	b.Run("rotate", func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		for i := range b.N {
			if i%20 == 0 {
				b.StopTimer()
				time.Sleep(findMaxAge + 50*time.Millisecond)
				b.StartTimer()
			}
			lat = append(lat, find(b, clients[i%nAPI], false))
		}
		lat.report(b, "")
	})
	b.Run("fresh", func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		for i := range b.N {
			lat = append(lat, find(b, clients[i%nAPI], true))
		}
		lat.report(b, "")
	})
	_ = fmt.Sprint
}
