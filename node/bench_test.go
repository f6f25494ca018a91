package node

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Loopback benchmarks: find and announce latency on a network of real
// nodes (libp2p TCP hosts on 127.0.0.1, the real DHT, real service
// listeners) in one process. See docs/performance.md.
//
// Each top-level benchmark builds its network once (a few seconds) and runs
// one sub-benchmark on it, so the setup is not repeated while the testing
// package sizes b.N.
//
//	go test -run '^$' -bench . -benchtime 50x ./node/

const (
	benchNodes     = 24 // DHT servers besides the bootstrap node
	benchInstances = 3  // of them, the ones running an instance of benchCell
	benchCell      = "bench/exchange"
)

// benchNet is a bootstrap node and benchNodes DHT servers bootstrapped to
// it. Every node has a runtime directory of its own, so a finder learns of
// an instance only through the DHT.
type benchNet struct {
	boot       *Node
	announcers []*Node // run an instance of benchCell each
	finders    []*Node // run nothing
}

func (bn *benchNet) name() string { return fmt.Sprintf("nodes=%d", 1+benchNodes) }

func newBenchNode(tb testing.TB, boot []peer.AddrInfo) *Node {
	tb.Helper()
	n, err := New(Config{
		Home: tb.TempDir(), RuntimeDir: tb.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: boot, DHT: dht.Config{Mode: dht.ModeServer},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	if boot != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	return n
}

// newBenchNet starts the network, refreshes every routing table, starts
// benchInstances announcers of benchCell and waits until every finder sees
// all of them. That is also the warm-up: afterwards every finder has run a
// full find, so the connections between the nodes are open.
func newBenchNet(tb testing.TB) *benchNet {
	tb.Helper()
	bn := &benchNet{boot: newBenchNode(tb, nil)}
	boot := []peer.AddrInfo{{ID: bn.boot.ID(), Addrs: bn.boot.Host().Addrs()}}
	all := []*Node{bn.boot}
	for range benchNodes {
		all = append(all, newBenchNode(tb, boot))
	}
	// Bootstrap only waits for one peer in the routing table; refresh
	// every table so that lookups run on a settled network.
	var wg sync.WaitGroup
	for _, n := range all {
		wg.Go(func() { <-n.DHT().Kad().RefreshRoutingTable() })
	}
	wg.Wait()
	rt := math.MaxInt
	for _, n := range all {
		rt = min(rt, n.DHT().Kad().RoutingTable().Size())
	}
	tb.Logf("%d nodes up; smallest routing table: %d peers", len(all), rt)

	bn.announcers, bn.finders = all[1:1+benchInstances], all[1+benchInstances:]
	for _, n := range bn.announcers {
		a, err := n.Announce(Announcement{Name: benchCell, Endpoint: service(tb).Addr().String(), CheckInterval: time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		// Withdraw while the network is still whole (cleanups run last
		// registered first), not while its nodes are closing.
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.Stop(ctx)
		})
		waitFor(tb, "first publish", func() bool { s := a.Status(); return s.Announcing && s.LastError == "" })
	}
	for _, f := range bn.finders {
		waitFor(tb, "all instances visible", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := f.Find(ctx, benchCell)
			return err == nil && len(res.Instances) == benchInstances
		})
	}
	return bn
}

// latencies collects one duration per iteration.
type latencies []time.Duration

// percentile returns the p-th percentile (nearest rank) in milliseconds.
func (l latencies) percentile(p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i]) / float64(time.Millisecond)
}

// report adds p50, p95 and p99 (in ms) of l to b's results, each unit
// prefixed by prefix.
func (l latencies) report(b *testing.B, prefix string) {
	for _, p := range []float64{50, 95, 99} {
		b.ReportMetric(l.percentile(p), fmt.Sprintf("%sp%g_ms", prefix, p))
	}
}

// BenchmarkFind is a full Node.Find from a node that runs nothing of the
// cell: DHT lookup of the peers closest to the cell's key, GET to each of
// them, verification and merge of the answers, then a TCP ping of every
// endpoint of the found instances. Finders rotate over the non-announcing
// nodes.
func BenchmarkFind(b *testing.B) {
	bn := newBenchNet(b)
	b.Run(bn.name(), func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		found := 0
		b.ResetTimer()
		for i := range b.N {
			f := bn.finders[i%len(bn.finders)]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			res, err := f.Find(ctx, benchCell)
			lat = append(lat, time.Since(start))
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			found += len(res.Instances)
		}
		b.StopTimer()
		lat.report(b, "")
		b.ReportMetric(float64(found)/float64(b.N), "instances/op")
	})
}

// BenchmarkDHTFind is the DHT part of a find alone (dht.Node.Find: lookup,
// GETs, verification, merge; no endpoint pings), with the closest-peer
// lookup reported on its own.
func BenchmarkDHTFind(b *testing.B) {
	bn := newBenchNet(b)
	b.Run(bn.name(), func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		lookup := make(latencies, 0, b.N)
		found, asked := 0, 0
		b.ResetTimer()
		for i := range b.N {
			f := bn.finders[i%len(bn.finders)]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			recs, st, err := f.DHT().Find(ctx, benchCell, nil, nil)
			lat = append(lat, time.Since(start))
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			lookup = append(lookup, st.Lookup)
			found += len(recs)
			asked += st.Responded
		}
		b.StopTimer()
		lat.report(b, "")
		lookup.report(b, "lookup_")
		b.ReportMetric(float64(found)/float64(b.N), "instances/op")
		b.ReportMetric(float64(asked)/float64(b.N), "peers_asked/op")
	})
}

// BenchmarkAnnounce is one publish of a freshly signed record
// (dht.Node.Publish: closest-peer lookup, then a PUT to each of the closest
// peers, each of which verifies the record before storing it). Publishers
// rotate over the non-announcing nodes. ns/op includes signing (about
// 30 µs); the percentiles time Publish only.
func BenchmarkAnnounce(b *testing.B) {
	bn := newBenchNet(b)
	var seq uint64 // across the runs of the sub-benchmark: never reused
	b.Run(bn.name(), func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		stored := 0
		b.ResetTimer()
		for i := range b.N {
			p := bn.finders[i%len(bn.finders)]
			seq++
			now := time.Now()
			r, err := record.Sign(p.priv, record.Record{
				Name: "bench/announce", PublicKey: p.priv.Public().(ed25519.PublicKey),
				Endpoints: []string{"127.0.0.1:9"}, Seq: seq, Issued: now, Expires: now.Add(record.MaxLifetime),
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			st, err := p.DHT().Publish(ctx, r)
			lat = append(lat, time.Since(start))
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			stored += st.Stored
		}
		b.StopTimer()
		lat.report(b, "")
		b.ReportMetric(float64(stored)/float64(b.N), "stored_at/op")
	})
}
