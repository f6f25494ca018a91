package dht

import (
	"context"
	"crypto/ed25519"
	"slices"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// A republish sends the record to the storers that took the previous one,
// without a lookup; when one of them is gone it asks the others for their
// closest peers and stores at the closest left, still without a lookup.
func TestRepublishReusesStorers(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 12, clk)
	pub, finder := nodes[1], nodes[7]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := pub.dht.Publish(ctx, pub.record(t, "acme/re", 1, clk.Now(), "10.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	before := pub.dht.Counters()["publish_reused"]
	clk.Add(time.Second)
	again, err := pub.dht.Publish(ctx, pub.record(t, "acme/re", 2, clk.Now(), "10.0.0.1:2"))
	if err != nil {
		t.Fatal(err)
	}
	if pub.dht.Counters()["publish_reused"] != before+1 {
		t.Fatalf("republish did a lookup: first %+v, again %+v", first, again)
	}
	if again.Sent > first.Closest || again.Stored != again.Sent {
		t.Fatalf("republish sent to %d peers (first publish: %d closest): %+v", again.Sent, first.Closest, again)
	}
	recs, _, err := finder.dht.Find(ctx, "acme/re", nil, clk.Now)
	if err != nil || len(recs) != 1 || recs[0].Seq != 2 {
		t.Fatalf("find after the republish: %v, %v", err, recs)
	}

	// One remembered storer leaves: the next publish repairs the set.
	var gone *testNode
	remembered := pub.dht.spaces[0].storers.get(record.Key("acme/re"), time.Now())
	for _, n := range nodes {
		if n != pub && n != finder && slices.Contains(remembered, n.host.ID()) {
			gone = n
			break
		}
	}
	if gone == nil {
		t.Fatal("no storer holds the record")
	}
	gone.dht.Close()
	gone.host.Close()
	clk.Add(time.Second)
	if _, err := pub.dht.Publish(ctx, pub.record(t, "acme/re", 3, clk.Now(), "10.0.0.1:3")); err != nil {
		t.Fatal(err)
	}
	if c := pub.dht.Counters(); c["publish_repaired"] != 1 || c["publish_reused"] != before+2 {
		t.Fatalf("publish with a storer gone: %d repaired, %d reused (want 1, %d)", c["publish_repaired"], c["publish_reused"], before+2)
	}
	if set := pub.dht.spaces[0].storers.get(record.Key("acme/re"), time.Now()); slices.Contains(set, gone.host.ID()) || len(set) < minReuse {
		t.Fatalf("storer set after the repair: %v (gone: %v)", set, gone.host.ID())
	}
	recs, _, err = finder.dht.Find(ctx, "acme/re", nil, clk.Now)
	if err != nil || len(recs) != 1 || recs[0].Seq != 3 {
		t.Fatalf("find after a storer left: %v, %v", err, recs)
	}
}

// A withdrawal reaches every peer that took the last record, the early
// likely storers met on the lookup's way included, not only the closest a
// republish reuses: a finder may remember any of them.
func TestWithdrawalReachesEveryHolder(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 16, clk)
	pub := nodes[3]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pub.dht.Publish(ctx, pub.record(t, "acme/gone", 1, clk.Now(), "10.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	w, err := record.Sign(pub.priv, record.Record{Name: "acme/gone", PublicKey: pub.priv.Public().(ed25519.PublicKey), Seq: 2,
		Issued: clk.Now(), Expires: clk.Now().Add(time.Minute), Withdrawn: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.dht.Publish(ctx, w); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		for _, r := range n.dht.Store().GetFor("acme/gone", nil) {
			if !r.Withdrawn {
				t.Fatalf("node %d still holds the live record (seq %d) after the withdrawal", i, r.Seq)
			}
		}
	}
}

// A republish checks its storer set (asks two storers for their closest
// peers) once Config.ReuseFor has passed since the last check, and not
// before: the check is what brings a republish to peers that came back.
func TestRepublishChecksAfterReuseFor(t *testing.T) {
	const reuseFor = 300 * time.Millisecond
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 12, clk, func(c *Config) { c.ReuseFor = reuseFor })
	pub := nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(seq uint64) map[string]uint64 {
		t.Helper()
		clk.Add(time.Second)
		if _, err := pub.dht.Publish(ctx, pub.record(t, "acme/check", seq, clk.Now(), "10.0.0.1:1")); err != nil {
			t.Fatal(err)
		}
		return pub.dht.Counters()
	}
	publish(1)
	a := publish(2) // the first reuse checks the set the lookup found
	b := publish(3)
	if b["publish_reused"] != a["publish_reused"]+1 || b["publish_refreshed"] != a["publish_refreshed"] {
		t.Fatalf("a republish within reuse_for: reused %d→%d, checked %d→%d (want one reuse, no check)",
			a["publish_reused"], b["publish_reused"], a["publish_refreshed"], b["publish_refreshed"])
	}
	time.Sleep(reuseFor + 50*time.Millisecond)
	c := publish(4)
	if c["publish_reused"] != b["publish_reused"]+1 || c["publish_refreshed"] != b["publish_refreshed"]+1 {
		t.Fatalf("a republish after reuse_for: reused %d→%d, checked %d→%d (want one reuse, one check)",
			b["publish_reused"], c["publish_reused"], b["publish_refreshed"], c["publish_refreshed"])
	}
}
