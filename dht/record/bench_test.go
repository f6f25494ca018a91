package record

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"
)

// Benchmarks of the instance record: the CPU cost of what every publisher,
// storer and finder does per record. See docs/performance.md for the
// figures and how to run them.

// benchNow is a time at which the test records (issued at t0) are live.
var benchNow = t0.Add(10 * time.Second)

// BenchmarkSign: canonical CBOR encoding of body and envelope, the field
// rules and one signature. v1 is the retired format 1 (Ed25519ctx, peer ID
// through libp2p's key types; dht/record/v1_test.go), v2 the current one (plain
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
