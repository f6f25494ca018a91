package dht

import (
	"bytes"
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

// BenchmarkSign: canonical CBOR encoding of body and envelope, the field
// rules and one signature. v1 is the retired format 1 (Ed25519ctx, peer ID
// through libp2p's key types; dht/v1_test.go), v2 the current one (plain
// Ed25519 over the domain-prefixed body, key checks).
func BenchmarkSign(b *testing.B) {
	priv := testKey(1)
	r := testRecord(priv)
	for _, f := range []struct {
		name string
		sign func(ed25519.PrivateKey, Record) (*Record, error)
	}{{"v1", v1Sign}, {"v2", Sign}} {
		b.Run(f.name, func(b *testing.B) {
			s, err := f.sign(priv, r)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.sign(priv, r); err != nil {
					b.Fatal(err)
				}
			}
			// After the loop: ResetTimer (which b.Loop calls) drops reported metrics.
			b.ReportMetric(float64(len(s.Bytes())), "record_bytes")
		})
	}
}

// BenchmarkDecode: parse envelope and body, re-encode both to check they
// are canonical, field rules, key checks, peer ID, signature.
func BenchmarkDecode(b *testing.B) {
	priv := testKey(1)
	raw := mustSign(b, priv, testRecord(priv))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify: Decode plus the name and clock checks, which is what a
// storer runs on every put and a finder on every record it receives; v1
// and v2 as in BenchmarkSign.
func BenchmarkVerify(b *testing.B) {
	priv := testKey(1)
	r := testRecord(priv)
	for _, f := range []struct {
		name   string
		sign   func(ed25519.PrivateKey, Record) (*Record, error)
		verify func([]byte, string, time.Time) (*Record, error)
	}{{"v1", v1Sign, v1Verify}, {"v2", Sign, Verify}} {
		b.Run(f.name, func(b *testing.B) {
			s, err := f.sign(priv, r)
			if err != nil {
				b.Fatal(err)
			}
			raw := s.Bytes()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.verify(raw, "acme/exchange", benchNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignature is the signature alone, without the encoding: v1's
// Ed25519ctx verification, and v2's key checks (canonical encoding, small
// order; the curve check runs only when the signature fails) and signature
// checks (S < L, R not small-order, plain Ed25519). v2-curve-check is the
// curve check alone, paid on failures and for a standalone delegation's
// node key.
func BenchmarkSignature(b *testing.B) {
	priv := testKey(1)
	pub := priv.Public().(ed25519.PublicKey)
	body := bytes.Repeat([]byte{0xa5}, 220)
	b.Run("v1", func(b *testing.B) {
		sig := ctxSig(priv, v1Context, body)
		for b.Loop() {
			if ed25519.VerifyWithOptions(pub, body, sig, &ed25519.Options{Context: v1Context}) != nil {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("v2", func(b *testing.B) {
		sig := signDomain(priv, RecordDomain, body)
		for b.Loop() {
			if checkKeyBytes(pub) != nil || checkSignature(pub, SignedMessage(RecordDomain, body), sig) != nil {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("v2-curve-check", func(b *testing.B) {
		for b.Loop() {
			if checkOnCurve(pub) != nil {
				b.Fatal("bad key")
			}
		}
	})
}

// BenchmarkVerifyDelegated is Verify of a record that carries a publisher's
// delegation: a second Ed25519ctx signature, checked along with the record's.
func BenchmarkVerifyDelegated(b *testing.B) {
	node, publisher := testKey(1), testKey(2)
	d, err := SignDelegation(publisher, Delegation{
		Name: "acme/exchange", Node: node.Public().(ed25519.PublicKey),
		Issued: t0, NotAfter: t0.Add(24 * time.Hour),
	})
	if err != nil {
		b.Fatal(err)
	}
	r := testRecord(node)
	r.Delegation = d
	raw := mustSign(b, node, r)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(raw, "acme/exchange", benchNow); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(raw)), "record_bytes")
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
