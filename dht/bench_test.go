package dht

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// Benchmarks of the instance record and the record store: the CPU cost of
// what every publisher, storer and finder does per record. See
// docs/performance.md for the figures and how to run them.

// benchNow is a time at which the test records (issued at t0) are live.
var benchNow = t0.Add(10 * time.Second)

// benchRecords signs one record of name from each of n keys (all at seq
// base), and returns the keys and the signed bytes.
func benchRecords(tb testing.TB, name string, n int, base uint64) ([]ed25519.PrivateKey, [][]byte) {
	tb.Helper()
	keys := make([]ed25519.PrivateKey, n)
	raws := make([][]byte, n)
	for i := range n {
		// testKey takes a byte; derive larger key sets from two bytes.
		seed := make([]byte, ed25519.SeedSize)
		seed[0], seed[1] = byte(i), byte(i>>8)
		seed[2] = 0xbe
		keys[i] = ed25519.NewKeyFromSeed(seed)
		r := testRecord(keys[i])
		r.Name = name
		r.Seq = base
		raws[i] = mustSign(tb, keys[i], r)
	}
	return keys, raws
}

// BenchmarkStorePut puts records into a store that already holds 100
// records under the same name.
//
//   - replace: each put is a new sequence number from one of the 100
//     publishers (the steady state: every instance republishes every 20 s).
//     The records are signed before the timer starts.
//   - identical: each put is the record already held (a republish that the
//     storer has seen, e.g. from a retried request): verified, then kept.
func BenchmarkStorePut(b *testing.B) {
	const name, n = "acme/exchange", 100
	newStore := func(b *testing.B) (*Store, []ed25519.PrivateKey, [][]byte) {
		keys, raws := benchRecords(b, name, n, 1)
		s := NewStore(StoreConfig{Now: func() time.Time { return benchNow }})
		for _, raw := range raws {
			if _, err := s.Put(name, raw); err != nil {
				b.Fatal(err)
			}
		}
		return s, keys, raws
	}
	b.Run("replace", func(b *testing.B) {
		s, keys, _ := newStore(b)
		next := make([][]byte, b.N)
		for i := range next {
			r := testRecord(keys[i%n])
			r.Seq = uint64(2 + i/n)
			next[i] = mustSign(b, keys[i%n], r)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := s.Put(name, next[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if s.Len() != n {
			b.Fatalf("store holds %d records, want %d", s.Len(), n)
		}
	})
	b.Run("identical", func(b *testing.B) {
		s, _, raws := newStore(b)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := s.Put(name, raws[i%n]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkStoreGet serves the 100 records held under one name: clock
// check of each, copy and sort by peer ID. No signature is verified here
// (the store verified on put; the finder verifies on receipt).
func BenchmarkStoreGet(b *testing.B) {
	const name, n = "acme/exchange", 100
	_, raws := benchRecords(b, name, n, 1)
	s := NewStore(StoreConfig{Now: func() time.Time { return benchNow }})
	for _, raw := range raws {
		if _, err := s.Put(name, raw); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := s.Get(name); len(got) != n {
			b.Fatalf("got %d records, want %d", len(got), n)
		}
	}
}

// BenchmarkMerge is a finder's merge of what 20 storers answered, each
// holding the same 20 records: 400 full verifications, newest per peer.
func BenchmarkMerge(b *testing.B) {
	const name, n, copies = "acme/exchange", 20, 20
	_, recs := benchRecords(b, name, n, 1)
	raws := make([][]byte, 0, n*copies)
	for range copies {
		raws = append(raws, recs...)
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := Merge(name, raws, benchNow, nil); len(got) != n {
			b.Fatalf("merged %d records, want %d", len(got), n)
		}
	}
}
