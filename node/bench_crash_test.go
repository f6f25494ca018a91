package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// crashedEndpoint is a black hole on this machine's test network
// (TEST-NET-1, RFC 5737): a dial there waits for its timeout, as a dial to
// a crashed host does.
const crashedEndpoint = "192.0.2.99:9"

// BenchmarkFindCrashed is BenchmarkFind with one more instance whose host
// has crashed: its record (signed by a key of its own, published once) is
// live, its endpoint a black hole. One finder runs every find, as a running
// node answers the finds of its local API.
//
//	go test -run '^$' -bench FindCrashed -benchtime 50x ./node/
func BenchmarkFindCrashed(b *testing.B) {
	bn := newBenchNet(b)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	r, err := record.Sign(key, record.Record{Name: benchCell, PublicKey: key.Public().(ed25519.PublicKey),
		Endpoints: []string{crashedEndpoint}, Seq: 1, Issued: now, Expires: now.Add(record.MaxLifetime)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := bn.announcers[0].DHT().Publish(ctx, r); err != nil {
		b.Fatal(err)
	}
	f := bn.finders[0]
	b.Run(bn.name(), func(b *testing.B) {
		lat := make(latencies, 0, b.N)
		slow := 0
		b.ResetTimer()
		for range b.N {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			res, err := f.Find(ctx, benchCell)
			d := time.Since(start)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Instances) != benchInstances+1 {
				b.Fatalf("%d instances, want %d", len(res.Instances), benchInstances+1)
			}
			lat = append(lat, d)
			if d >= ProbeTimeout {
				slow++
			}
		}
		b.StopTimer()
		lat.report(b, "")
		b.ReportMetric(float64(slow), "finds_over_500ms")
	})
}
