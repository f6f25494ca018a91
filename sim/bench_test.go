package sim

import (
	"context"
	"testing"
	"time"
)

// BenchmarkDesign measures design 1 (set-store) and design 2 (value-records)
// on one network built from testdata/bench-200.json: 200 nodes, 20 ms
// one-way links. One iteration is one Measure: every announce and every
// find of the scenario. Run it with
//
//	go test -bench Design -run '^$' -timeout 30m ./sim/
func BenchmarkDesign(b *testing.B) {
	benchScenario(b, "testdata/bench-200.json")
}

// BenchmarkDesign100 is BenchmarkDesign on 100 nodes.
func BenchmarkDesign100(b *testing.B) {
	benchScenario(b, "testdata/bench-100.json")
}

func benchScenario(b *testing.B, path string) {
	sc, err := LoadScenario(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	nw, err := New(ctx, sc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nw.Close() })
	for _, d := range []Design{SetStore, ValueRecords} {
		b.Run(d.String(), func(b *testing.B) {
			var r *Report
			for b.Loop() {
				if r, err = nw.Measure(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			b.Logf("\n%s", r)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(r.Find.P50RTT, "find-p50-RTT")
			b.ReportMetric(r.Find.P95RTT, "find-p95-RTT")
			b.ReportMetric(r.Announce.P50RTT, "announce-p50-RTT")
			b.ReportMetric(r.MessagesPerFind, "msgs/find")
			b.ReportMetric(r.MessagesPerAnnounce, "msgs/announce")
			b.ReportMetric(100*r.Success, "success-%")
			b.ReportMetric(r.SetupSeconds, "setup-s")
			b.ReportMetric(r.HeapBytesPerNode, "heap-B/node")
			b.ReportMetric(r.GoroutinesPerNode, "goroutines/node")
		})
	}
}
