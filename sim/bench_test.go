package sim

import (
	"context"
	"fmt"
	"runtime/debug"
	"testing"
	"time"
)

// BenchmarkNetwork runs the scenarios testdata/bench-200.json and
// bench-1000.json (20 ms one-way links) with the baseline beside: one
// iteration is one Run, setup included. Run it with
//
//	go test -bench Network -run '^$' -timeout 30m ./sim/
//
// It reports the figures of the last iteration: find latency in RTTs,
// messages, and the memory and goroutines of each node after setup.
func BenchmarkNetwork(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	for _, n := range []int{200, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			benchScenario(b, fmt.Sprintf("testdata/bench-%d.json", n))
		})
	}
}

// BenchmarkDesign100 is BenchmarkNetwork on 100 nodes.
func BenchmarkDesign100(b *testing.B) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	benchScenario(b, "testdata/bench-100.json")
}

func benchScenario(b *testing.B, path string) {
	sc, err := LoadScenario(path)
	if err != nil {
		b.Fatal(err)
	}
	sc.Baseline = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var r *Report
	for b.Loop() {
		if r, err = Run(ctx, sc); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("\n%s", r)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.Find.P50RTT, "find-p50-RTT")
	b.ReportMetric(r.Find.P95RTT, "find-p95-RTT")
	b.ReportMetric(r.FindFirst.P50RTT, "first-p50-RTT")
	b.ReportMetric(r.FindRepeat.P50RTT, "repeat-p50-RTT")
	b.ReportMetric(r.Announce.P50RTT, "announce-p50-RTT")
	b.ReportMetric(r.MessagesPerFind, "msgs/find")
	b.ReportMetric(r.MessagesPerAnnounce, "msgs/announce")
	b.ReportMetric(100*r.Success, "success-%")
	b.ReportMetric(r.SetupSeconds, "setup-s")
	b.ReportMetric(r.Memory.RSSBytes, "RSS-B/node")
	b.ReportMetric(r.Memory.HeapBytes, "heap-B/node")
	b.ReportMetric(r.Memory.Goroutines, "goroutines/node")
	if base := r.Baseline; base != nil {
		b.ReportMetric(base.Find.P50RTT, "base-find-p50-RTT")
		b.ReportMetric(base.MessagesPerFind, "base-msgs/find")
	}
}
