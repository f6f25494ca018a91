package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

func TestStoreQuotas(t *testing.T) {
	clk := &clock{t: t0.Add(time.Second)}
	fake := testKey(50)
	rec := func(i int, d bool) []byte {
		k := testKey(byte(60 + i))
		r := testRecord(k)
		if d {
			r.Delegation = testDelegation(t, fake, r.Name, k.Public().(ed25519.PublicKey), t0, time.Hour)
		}
		return mustSign(t, k, r)
	}
	t.Run("per publisher in a name's set", func(t *testing.T) {
		s := NewStore(StoreConfig{MaxPerName: 8, MaxPerPublisher: 2, Now: clk.Now})
		for i := range 2 {
			if _, err := s.Put("acme/exchange", rec(i, true)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Put("acme/exchange", rec(2, true)); !errors.Is(err, ErrFull) {
			t.Fatalf("third record of one publisher: %v", err)
		}
		// Open records and the publisher's own set are not limited by it.
		if _, err := s.Put("acme/exchange", rec(3, false)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutFor("acme/exchange", fake.Public().(ed25519.PublicKey), rec(2, true)); err != nil {
			t.Fatal(err)
		}
		// Republishing a held record is not a new one.
		if _, err := s.Put("acme/exchange", rec(0, true)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		one := len(rec(0, false))
		s := NewStore(StoreConfig{MaxBytes: 2 * one, Now: clk.Now})
		s.Put("acme/exchange", rec(0, false))
		s.Put("acme/exchange", rec(1, false))
		if _, err := s.Put("acme/exchange", rec(2, false)); !errors.Is(err, ErrFull) {
			t.Fatalf("over the byte bound: %v", err)
		}
		if s.Bytes() != 2*one {
			t.Fatalf("Bytes = %d, want %d", s.Bytes(), 2*one)
		}
		clk.Add(2 * time.Minute) // everything expires: room again
		if _, err := s.Put("acme/exchange", mustSign(t, testKey(90), record.Record{Name: "acme/exchange",
			PublicKey: testKey(90).Public().(ed25519.PublicKey), Endpoints: []string{"h:1"}, Seq: 1,
			Issued: clk.Now(), Expires: clk.Now().Add(time.Minute)})); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
		if s.Bytes() > one+10 {
			t.Fatalf("expired bytes not freed: %d", s.Bytes())
		}
		if c := s.Counters(); c["rejected_full"] == 0 {
			t.Fatalf("rejections not counted: %v", c)
		}
	})
	t.Run("names", func(t *testing.T) {
		s := NewStore(StoreConfig{MaxNames: 1, Now: clk.Now})
		k := testKey(91)
		mk := func(name string) []byte {
			return mustSign(t, k, record.Record{Name: name, PublicKey: k.Public().(ed25519.PublicKey), Endpoints: []string{"h:1"},
				Seq: 1, Issued: clk.Now(), Expires: clk.Now().Add(time.Minute)})
		}
		if _, err := s.Put("acme/a", mk("acme/a")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put("acme/b", mk("acme/b")); !errors.Is(err, ErrFull) {
			t.Fatalf("second name: %v", err)
		}
	})
}

func TestRateLimit(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 2, clk)
	a, b := nodes[0], nodes[1]
	b.dht.cfg.PeerRate = 1 // a burst of 5, then one a second
	ctx := context.Background()
	refused := 0
	for range 20 {
		if _, err := a.dht.call(ctx, b.host.ID(), request{Op: opGet, Name: "acme/x"}); err != nil {
			refused++
		}
	}
	if refused < 10 || b.dht.Counters()["rate_limited"] != uint64(refused) {
		t.Fatalf("refused %d of 20, counted %d", refused, b.dht.Counters()["rate_limited"])
	}
}

// One source (a network, or a peer) cannot hold more than its quota of a
// store; other sources and this node's own records still get in, a
// republish is not a new record, and expiry frees the quota.
func TestStoreSourceQuota(t *testing.T) {
	clk := &clock{t: t0.Add(time.Second)}
	mk := func(i int, name string, seq uint64) []byte {
		k := testKey(byte(100 + i))
		return mustSign(t, k, record.Record{Name: name, PublicKey: k.Public().(ed25519.PublicKey), Endpoints: []string{"h:1"},
			Seq: seq, Issued: clk.Now(), Expires: clk.Now().Add(time.Minute)})
	}
	s := NewStore(StoreConfig{MaxPerSource: 2, Now: clk.Now})
	for i, name := range []string{"flood/a", "flood/b"} {
		if _, err := s.PutFrom("5.9.0.0/16", name, nil, mk(i, name, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutFrom("5.9.0.0/16", "flood/c", nil, mk(2, "flood/c", 1)); !errors.Is(err, ErrFull) {
		t.Fatalf("third record from one network: %v", err)
	}
	if _, ok := s.byName["flood/c"]; ok {
		t.Fatal("a refused record left an empty set behind")
	}
	if _, err := s.PutFrom("5.9.0.0/16", "flood/a", nil, mk(0, "flood/a", 2)); err != nil {
		t.Fatalf("republish within the quota: %v", err)
	}
	if _, err := s.PutFrom("11.7.0.0/16", "acme/exchange", nil, mk(3, "acme/exchange", 1)); err != nil {
		t.Fatalf("another network: %v", err)
	}
	if _, err := s.PutFor("acme/own", nil, mk(4, "acme/own", 1)); err != nil {
		t.Fatalf("this node's own record: %v", err)
	}
	clk.Add(2 * time.Minute)
	if _, err := s.PutFrom("5.9.0.0/16", "flood/c", nil, mk(2, "flood/c", 2)); err != nil {
		t.Fatalf("after the network's records expired: %v", err)
	}
	if u := s.bySrc["5.9.0.0/16"]; u.records != 1 {
		t.Fatalf("quota after expiry: %+v", u)
	}
}
