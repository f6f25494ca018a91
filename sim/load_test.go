package sim

import (
	"context"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
)

// TestServedMatchesSent checks the serving meters against the sending
// ones: every request a publisher sends on the kad-dht and cell protocols
// is counted once by the server that reads it, cell requests by op, and
// the bytes one side writes are the bytes the other reads. A find that
// stops early cancels requests still in flight, which their servers never
// read: there, served is at most sent. The only PUTs served during a
// find are handoffs.
func TestServedMatchesSent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nw := testNetwork(t, ctx, Scenario{Nodes: 12, BucketSize: 8, Seed: 3})
	sums := func() (sent, served tally) {
		for i := range nw.Len() {
			sent = sent.add(nw.member(i).meter.snapshot())
			served = served.add(nw.member(i).served.snapshot())
		}
		return sent, served
	}
	s0, v0 := sums()
	var sent, served tally
	since := func() { sent, served = sums(); sent, served = sent.sub(s0), served.sub(v0) }
	s := &slot{node: 2, name: "sim/cell-0"}
	if err := nw.announce(ctx, SetStore, s); err != nil {
		t.Fatal(err)
	}
	exact := func() bool {
		since()
		return sent.msgs[kindCell] > 0 && sent.msgs[kindFindNode] == served.msgs[kindFindNode] &&
			sent.msgs[kindCell] == served.msgs[kindCellPut] && served.msgs[kindCell]+served.msgs[kindCellGet] == 0 &&
			sent.sent == served.recvd && sent.recvd == served.sent
	}
	if err := poll.Until(ctx, 10*time.Millisecond, exact); err != nil {
		t.Fatalf("publish: sent %+v, served %+v", sent, served)
	}
	// Storers hand sets to peers that enter their routing tables (dht's
	// handoff), which a find's lookup can make happen: those PUTs are
	// served in the find's window, and a find itself sends none.
	handoffs := func() (n uint64) {
		for i := range nw.Len() {
			n += nw.Node(i).DHT().Counters()["handoff_sent"]
		}
		return n
	}
	s0, v0 = sums()
	h0 := handoffs()
	if _, _, err := nw.find(ctx, SetStore, 7, s.name, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool { since(); return served.msgs[kindCellGet] > 0 }); err != nil {
		t.Fatalf("find: no GET served: sent %+v", sent)
	}
	h := handoffs() - h0
	if served.msgs[kindCellGet] == 0 || served.msgs[kindCellGet]+served.msgs[kindCellPut] > sent.msgs[kindCell] ||
		served.msgs[kindFindNode] > sent.msgs[kindFindNode] || served.recvd > sent.sent || (served.msgs[kindCellPut] != 0 && h == 0) {
		t.Fatalf("find: sent %+v, served %+v, handoff PUTs sent %d", sent, served, h)
	}
}

// TestLoadReport runs a small scenario with churn and bootstrap nodes and
// checks that the report's load covers the find phase: the servers' GETs
// are at least the finds' (the finders sent them), and the bootstrap nodes
// received the joining nodes' lookups.
func TestLoadReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sc := Scenario{Nodes: 16, BucketSize: 8, Cells: 2, InstancesPerCell: 2, Finds: 6, Kills: -1,
		Churn: Churn{Leave: 0.2, Join: 0.2}, Bootstrap: 2, Seed: 5}
	rep, err := Run(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Load
	if l.SimSeconds < 5 || l.Servers.Nodes == 0 || l.Bootstrap == nil || l.Bootstrap.Nodes != 2 {
		t.Fatalf("load %+v", l)
	}
	gets := l.Servers.ByKind["cell_get"].Mean * float64(l.Servers.Nodes)
	if sent := float64(rep.FindMessages["cell"]) / l.SimSeconds; gets+1e-9 < sent*0.5 {
		t.Errorf("servers got %.2f GETs/s, finders sent %.2f cell requests/s", gets, sent)
	}
	if l.Bootstrap.ByKind["kad_find_node"].Max == 0 {
		t.Errorf("bootstrap nodes received no lookups: %+v", l.Bootstrap)
	}
	if l.Servers.Records.Max == 0 || l.PeakRSSBytes == 0 {
		t.Errorf("records %+v, peak RSS %v", l.Servers.Records, l.PeakRSSBytes)
	}
	if l.Servers.MessagesPerSecond.P50 > l.Servers.MessagesPerSecond.P99 || l.Servers.MessagesPerSecond.P99 > l.Servers.MessagesPerSecond.Max {
		t.Errorf("spread out of order: %+v", l.Servers.MessagesPerSecond)
	}
}

// TestRepublishReuseUnderChurn runs one small churn scenario with the
// storers reused and with a lookup on every publish: the same schedule,
// fewer messages per republish with reuse, and every find still complete.
func TestRepublishReuseUnderChurn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sc := Scenario{Nodes: 30, BucketSize: 8, Cells: 2, InstancesPerCell: 2, Finds: 25, Kills: -1,
		Churn: Churn{Leave: 0.2, Join: 0.2}, Seed: 11}
	reuse, err := Run(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	sc.AlwaysLookup = true
	lookup, err := Run(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	if reuse.Schedule != lookup.Schedule {
		t.Fatalf("schedules differ: %s, %s", reuse.Schedule, lookup.Schedule)
	}
	if reuse.Republishes == 0 || reuse.MessagesPerRepublishOnly >= lookup.MessagesPerRepublishOnly {
		t.Errorf("messages per republish: %.1f with reuse (%d republishes), %.1f with lookups",
			reuse.MessagesPerRepublishOnly, reuse.Republishes, lookup.MessagesPerRepublishOnly)
	}
	for _, r := range []*Report{reuse, lookup} {
		if r.Success != 1 || r.StaleReturns != 0 {
			t.Errorf("always_lookup %v: success %.2f, %d stale returns; first miss %s", r.Scenario.AlwaysLookup, r.Success, r.StaleReturns, r.FirstMiss)
		}
	}
}
