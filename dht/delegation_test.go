package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

func testDelegation(t testing.TB, pub ed25519.PrivateKey, name string, node ed25519.PublicKey, issued time.Time, ttl time.Duration) *record.Delegation {
	t.Helper()
	d, err := record.SignDelegation(pub, record.Delegation{Name: name, Node: node, Issued: issued, NotAfter: issued.Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFindPublishers: a flood of records under the name, from other
// publishers and from open records, fills the name's set at every storer;
// a finder that trusts the real publisher still gets its instances, since it
// asks for that publisher's set.
func TestFindPublishers(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 10, clk)
	for _, n := range nodes {
		n.dht.store.cfg.MaxPerName = 8 // small sets make the flood cheap
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	real, fake := testKey(20), testKey(21)
	realPub := real.Public().(ed25519.PublicKey)

	// The flood first: 3×8 records from other keys fill every name set.
	for i := range 24 {
		k := testKey(byte(100 + i))
		r := testRecord(k)
		r.Issued, r.Expires, r.Seq = clk.Now(), clk.Now().Add(time.Minute), 1
		if i%2 == 0 {
			r.Delegation = testDelegation(t, fake, "acme/exchange", k.Public().(ed25519.PublicKey), clk.Now(), time.Hour)
		}
		s, err := record.Sign(k, r)
		if err != nil {
			t.Fatal(err)
		}
		nodes[1+i%9].dht.Publish(ctx, s) // errors expected once sets fill up
	}
	// Then the real instances, on nodes 1..3.
	want := map[string]bool{}
	for _, n := range nodes[1:4] {
		d := testDelegation(t, real, "acme/exchange", n.priv.Public().(ed25519.PublicKey), clk.Now(), time.Hour)
		r := record.Record{Name: "acme/exchange", PublicKey: n.priv.Public().(ed25519.PublicKey), Endpoints: []string{"h:1"},
			Seq: 1, Issued: clk.Now(), Expires: clk.Now().Add(time.Minute), Delegation: d}
		s, err := record.Sign(n.priv, r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.dht.Publish(ctx, s); err != nil {
			t.Fatal(err)
		}
		want[n.host.ID().String()] = true
	}
	for i, n := range nodes {
		if held := len(n.dht.Store().Get("acme/exchange")); held > 8 {
			t.Fatalf("node %d holds %d records in the name's set, over its bound of 8", i, held)
		}
	}
	recs, st, err := nodes[9].dht.Find(ctx, "acme/exchange", []ed25519.PublicKey{realPub}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Peer.String()] = true
	}
	if len(got) != 3 || !got[nodes[1].host.ID().String()] || !got[nodes[2].host.ID().String()] || !got[nodes[3].host.ID().String()] {
		t.Fatalf("trusted find got %v (stats %+v)", got, st)
	}
	// A storer refuses a record in a publisher's set that the publisher
	// did not delegate.
	open := nodes[4].record(t, "acme/exchange", 1, clk.Now(), "h:1")
	_, err = nodes[4].dht.call(ctx, nodes[5].host.ID(), request{Op: opPut, Name: "acme/exchange", Record: open.Bytes(), Publisher: realPub})
	var re *RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("open record in a publisher's set: %v", err)
	}
}
