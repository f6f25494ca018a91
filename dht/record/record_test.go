package record

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// testKey returns a deterministic key; n picks one of several.
func testKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

func testRecord(priv ed25519.PrivateKey) Record {
	return Record{
		Name:      "acme/exchange",
		PublicKey: priv.Public().(ed25519.PublicKey),
		Endpoints: []string{"192.0.2.7:9000", "unix:/run/cells/exchange.sock"},
		Region:    "eu-west",
		Seq:       1_795_000_000_000_000,
		Issued:    t0,
		Expires:   t0.Add(60 * time.Second),
	}
}

func mustSign(t testing.TB, priv ed25519.PrivateKey, r Record) []byte {
	t.Helper()
	s, err := Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	return s.Bytes()
}

// reencode decodes raw's envelope and body, lets edit change the body
// fields, and re-signs with priv (when priv is not nil) or keeps the old
// signature.
func reencode(t *testing.T, raw []byte, priv ed25519.PrivateKey, edit func(*body)) []byte {
	t.Helper()
	var env envelope
	if err := cbor.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	var b body
	if err := cbor.Unmarshal(env.Body, &b); err != nil {
		t.Fatal(err)
	}
	edit(&b)
	env.Body, _ = encMode.Marshal(b)
	if priv != nil {
		env.Sig = signDomain(priv, RecordDomain, env.Body)
	}
	out, _ := encMode.Marshal(env)
	return out
}

func TestVerifyRejects(t *testing.T) {
	priv, other := testKey(1), testKey(2)
	good := mustSign(t, priv, testRecord(priv))
	now := t0.Add(10 * time.Second)

	resign := func(sign func(body []byte) []byte) []byte { // same body, another signature
		var env envelope
		_ = cbor.Unmarshal(good, &env)
		env.Sig = sign(env.Body)
		out, _ := encMode.Marshal(env)
		return out
	}
	nonCanonicalEnvelope := func() []byte { // envelope keys in the wrong order
		var env envelope
		_ = cbor.Unmarshal(good, &env)
		m := cbor.EncOptions{Sort: cbor.SortNone}
		em, _ := m.EncMode()
		type rev struct {
			Sig  []byte `cbor:"2,keyasint"`
			Body []byte `cbor:"1,keyasint"`
		}
		out, _ := em.Marshal(rev{Sig: env.Sig, Body: env.Body})
		return out
	}

	tests := []struct {
		name string
		raw  []byte
		cell string
		now  time.Time
		want error
	}{
		{"good", good, "acme/exchange", now, nil},
		{"empty", nil, "", now, ErrMalformed},
		{"garbage", []byte("hello"), "", now, ErrMalformed},
		{"oversized", make([]byte, MaxRecordSize+1), "", now, ErrTooLarge},
		{"bad signature", reencode(t, good, nil, func(b *body) { b.Region = "us-east" }), "", now, ErrBadSignature},
		{"signed by another key", reencode(t, good, other, func(b *body) {}), "", now, ErrBadSignature},
		{"ed25519 over the body alone (no domain)", resign(func(b []byte) []byte { return ed25519.Sign(priv, b) }), "", now, ErrBadSignature},
		{"v1 signature (Ed25519ctx)", resign(func(b []byte) []byte { return ctxSig(priv, "cellnode/instance/v1", b) }), "", now, ErrBadSignature},
		{"delegation domain", resign(func(b []byte) []byte { return signDomain(priv, DelegationDomain, b) }), "", now, ErrBadSignature},
		{"S + L", resign(func(b []byte) []byte { return addL(signDomain(priv, RecordDomain, b)) }), "", now, ErrNonCanonicalSignature},
		{"peer id of another key", reencode(t, good, priv, func(b *body) {
			b.Peer = peerIDBytes(other.Public().(ed25519.PublicKey))
		}), "", now, ErrPeerMismatch},
		{"small-order key", reencode(t, good, priv, func(b *body) {
			b.Key = smallOrderPoints[0]
			b.Peer = peerIDBytes(b.Key)
		}), "", now, ErrSmallOrderKey},
		{"another name", good, "acme/other", now, ErrWrongName},
		{"lifetime over 60s", reencode(t, good, priv, func(b *body) { b.Expires = b.Issued + 60_001 }), "", now, ErrLifetime},
		{"expires before issued", reencode(t, good, priv, func(b *body) { b.Expires = b.Issued - 1 }), "", now, ErrMalformed},
		{"issued in the future", good, "", t0.Add(-MaxSkew - time.Millisecond), ErrFuture},
		{"issued within skew", good, "", t0.Add(-MaxSkew), nil},
		{"expired", good, "", t0.Add(60*time.Second + MaxSkew + time.Millisecond), ErrExpired},
		{"expired within skew", good, "", t0.Add(60*time.Second + MaxSkew), nil},
		{"non-canonical envelope", nonCanonicalEnvelope(), "", now, ErrNonCanonical},
		{"trailing bytes", append(bytes.Clone(good), 0), "", now, ErrMalformed},
		{"version 1", reencode(t, good, priv, func(b *body) { b.Version = 1 }), "", now, ErrMalformed},
		{"version 3", reencode(t, good, priv, func(b *body) { b.Version = 3 }), "", now, ErrMalformed},
		{"endpoint without a port", reencode(t, good, priv, func(b *body) { b.Endpoints = []string{"host"} }), "", now, ErrMalformed},
		{"manifest of codec raw", reencode(t, good, priv, func(b *body) {
			b.Manifest = cid.NewCidV1(cid.Raw, cid.MustParse("baf4bcfd4bh5gdnl6n7fygqbk6hbtfbqgmkbqvci").Hash()).Bytes()
		}), "", now, ErrMalformed},
		{"seq over 2^63-1", reencode(t, good, priv, func(b *body) { b.Seq = MaxSeq + 1 }), "", now, ErrMalformed},
		{"bad name", reencode(t, good, priv, func(b *body) { b.Name = "Acme/Exchange" }), "", now, ErrMalformed},
		{"no endpoints", reencode(t, good, priv, func(b *body) { b.Endpoints = []string{} }), "", now, ErrMalformed},
		{"null endpoints", reencode(t, good, priv, func(b *body) { b.Endpoints = nil }), "", now, ErrMalformed},
		{"seq zero", reencode(t, good, priv, func(b *body) { b.Seq = 0 }), "", now, ErrMalformed},
		{"short key", reencode(t, good, priv, func(b *body) { b.Key = b.Key[:31] }), "", now, ErrMalformed},
		{"too many endpoints", reencode(t, good, priv, func(b *body) {
			b.Endpoints = make([]string, MaxEndpoints+1)
			for i := range b.Endpoints {
				b.Endpoints[i] = "h:1"
			}
		}), "", now, ErrMalformed},
		{"long region", reencode(t, good, priv, func(b *body) { b.Region = strings.Repeat("r", MaxRegionLen+1) }), "", now, ErrMalformed},
		{"bad manifest cid", reencode(t, good, priv, func(b *body) { b.Manifest = []byte{1, 2, 3} }), "", now, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Verify(tc.raw, tc.cell, tc.now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !bytes.Equal(r.Bytes(), tc.raw) {
					t.Fatal("Bytes() differs from input")
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify error = %v, want %v", err, tc.want)
			}
			if r != nil {
				t.Fatal("rejected record returned")
			}
		})
	}
}

func TestNonCanonicalBody(t *testing.T) {
	priv := testKey(1)
	good := mustSign(t, priv, testRecord(priv))
	var env envelope
	_ = cbor.Unmarshal(good, &env)
	// Append an unknown key 12 to the body map by hand: a decoder that
	// ignored unknown fields would accept a record that re-encodes shorter.
	b := bytes.Clone(env.Body)
	if b[0]&0xe0 != 0xa0 {
		t.Fatalf("body is not a small map: %x", b[0])
	}
	b[0]++
	b = append(b, 0x0c, 0x00)
	env.Body = b
	env.Sig = signDomain(priv, RecordDomain, b)
	raw, _ := encMode.Marshal(env)
	if _, err := Decode(raw); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown field: err = %v", err)
	}
	// A one-byte uint written in the long form is valid CBOR but not canonical.
	b2 := bytes.Clone(env.Body[:0])
	b2 = append(b2, 0xa1, 0x00, 0x1b, 0, 0, 0, 0, 0, 0, 0, 1) // {0: 1} with an 8-byte uint
	env.Body = b2
	env.Sig = signDomain(priv, RecordDomain, b2)
	raw, _ = encMode.Marshal(env)
	if _, err := Decode(raw); !errors.Is(err, ErrNonCanonical) {
		t.Fatalf("long-form uint: err = %v", err)
	}
}

// TestTamper flips every bit of a good record in turn: no flip may produce
// a record that verifies.
func TestTamper(t *testing.T) {
	priv := testKey(1)
	good := mustSign(t, priv, testRecord(priv))
	for i := range good {
		for bit := 0; bit < 8; bit++ {
			raw := bytes.Clone(good)
			raw[i] ^= 1 << bit
			if _, err := Decode(raw); err == nil {
				t.Fatalf("flipping byte %d bit %d still verifies", i, bit)
			}
		}
	}
}

func TestSignRoundTrip(t *testing.T) {
	priv := testKey(3)
	r := testRecord(priv)
	r.Manifest = cid.MustParse("baf4bcfd4bh5gdnl6n7fygqbk6hbtfbqgmkbqvci")
	r.Issued = t0.Add(123456789 * time.Nanosecond) // sub-millisecond is dropped
	s, err := Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(s.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !d.Issued.Equal(t0.Add(123*time.Millisecond)) || !d.Manifest.Equals(r.Manifest) || d.Peer != s.Peer || d.Region != r.Region {
		t.Fatalf("round trip: got %+v", d)
	}
	if _, err := Sign(testKey(4), r); err == nil {
		t.Fatal("Sign with a key that is not the record's succeeded")
	}
	w := r
	w.Withdrawn, w.Endpoints = true, nil
	if _, err := Sign(priv, w); err != nil {
		t.Fatalf("withdrawal: %v", err)
	}
}

type golden struct {
	Comment   string   `json:"comment"`
	Seed      string   `json:"seed_hex"`
	Name      string   `json:"name"`
	Peer      string   `json:"peer"`
	Endpoints []string `json:"endpoints"`
	Region    string   `json:"region"`
	Manifest  string   `json:"manifest"`
	Seq       uint64   `json:"seq"`
	IssuedMS  int64    `json:"issued_unix_ms"`
	ExpiresMS int64    `json:"expires_unix_ms"`
	Body      string   `json:"body_hex"`
	Signature string   `json:"signature_hex"`
	Record    string   `json:"record_hex"`
}

// TestGolden pins the signed format: the same fields and key must always
// give these exact bytes, and these bytes must always verify.
func TestGolden(t *testing.T) {
	const path = "testdata/record_v2.json"
	priv := testKey(7)
	r := testRecord(priv)
	r.Manifest = cid.MustParse("baf4bcfd4bh5gdnl6n7fygqbk6hbtfbqgmkbqvci")
	s, err := Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	var env envelope
	_ = cbor.Unmarshal(s.Bytes(), &env)
	got := golden{
		Comment:   "cellnode instance record v2: plain Ed25519 (RFC 8032) over 0x14 || \"cellnode/instance/v2\" || body; see docs/records.md",
		Seed:      hex.EncodeToString(priv.Seed()),
		Name:      r.Name,
		Peer:      s.Peer.String(),
		Endpoints: r.Endpoints,
		Region:    r.Region,
		Manifest:  r.Manifest.String(),
		Seq:       r.Seq,
		IssuedMS:  r.Issued.UnixMilli(),
		ExpiresMS: r.Expires.UnixMilli(),
		Body:      hex.EncodeToString(env.Body),
		Signature: hex.EncodeToString(env.Sig),
		Record:    hex.EncodeToString(s.Bytes()),
	}
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want golden
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got.Record != want.Record || got.Body != want.Body || got.Signature != want.Signature || got.Peer != want.Peer {
		t.Fatalf("signed format changed:\n got %s\nwant %s", got.Record, want.Record)
	}
	// The signature checks with plain Ed25519 of the standard library,
	// given only the seed, the body bytes and the domain string.
	seed, _ := hex.DecodeString(want.Seed)
	bodyBytes, _ := hex.DecodeString(want.Body)
	sig, _ := hex.DecodeString(want.Signature)
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	msg := append([]byte{byte(len("cellnode/instance/v2"))}, "cellnode/instance/v2"...)
	if !ed25519.Verify(pub, append(msg, bodyBytes...), sig) {
		t.Fatal("golden signature does not verify as plain Ed25519")
	}
	raw, _ := hex.DecodeString(want.Record)
	d, err := Verify(raw, want.Name, time.UnixMilli(want.IssuedMS))
	if err != nil {
		t.Fatalf("golden record does not verify: %v", err)
	}
	if d.Seq != want.Seq || d.Peer.String() != want.Peer || d.Manifest.String() != want.Manifest {
		t.Fatalf("golden record decodes to %+v", d)
	}
}

func FuzzDecode(f *testing.F) {
	for _, raw := range vectorInputs(f, "record") {
		f.Add(raw)
	}
	priv := testKey(1)
	good := mustSign(f, priv, testRecord(priv))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0xa2, 0x01, 0x40, 0x02, 0x40})
	w := testRecord(priv)
	w.Withdrawn, w.Endpoints = true, nil
	f.Add(mustSign(f, priv, w))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := Decode(raw)
		if err != nil {
			if r != nil {
				t.Fatal("record returned with error")
			}
			return
		}
		// Anything accepted is canonical: signing the decoded fields again
		// gives the same body (signatures are deterministic only for our key).
		if !bytes.Equal(r.Bytes(), raw) {
			t.Fatal("accepted bytes differ from Bytes()")
		}
		for _, e := range r.Endpoints {
			if CheckEndpoint(e) != nil {
				t.Fatalf("accepted endpoint %q", e)
			}
		}
		if checkKey(r.PublicKey) != nil {
			t.Fatal("accepted a weak key")
		}
		// What was signed is what the fields say: they encode back to the
		// body's bytes.
		b, err := bodyOf(r)
		again, err2 := encMode.Marshal(b)
		body, _, _ := openEnvelope(raw)
		if err != nil || err2 != nil || !bytes.Equal(again, body) {
			t.Fatalf("the fields of an accepted record encode to other bytes: %v %v", err, err2)
		}
	})
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"acme/exchange", true}, {"a/b", true}, {"a-1.x/y.z-2", true},
		{strings.Repeat("a", 64) + "/b", true}, {strings.Repeat("a", 65) + "/b", false},
		{"", false}, {"acme", false}, {"/x", false}, {"x/", false}, {"a/b/c", false},
		{"Acme/x", false}, {"a_b/c", false}, {"a b/c", false}, {"a/é", false},
	} {
		_, err := ParseName(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseName(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ParseName(%q) error does not wrap ErrInvalidName", tc.in)
		}
	}
}

func TestCheckEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"192.0.2.7:9000", true}, {"h:1", true}, {"h:65535", true}, {"My_Host-1.example.org:80", true},
		{"[::1]:80", true}, {"[2001:DB8::1]:443", true}, {"[::ffff:192.0.2.1]:1", true},
		{"unix:/run/x.sock", true}, {"unix:/a", true}, {"unix:/" + strings.Repeat("a", 250), true},
		{"", false}, {"no-port", false}, {"host:0", false}, {"host:65536", false}, {"host:99999", false},
		{"host:080", false}, {"host:+80", false}, {"host:-1", false}, {"host:", false}, {"host:8o", false},
		{":9000", false}, {"a b:1", false}, {"exa%mple:80", false}, {"é.example:80", false},
		{"::1:80", false}, {"[::1:80", false}, {"[::1]", false}, {"[]:80", false}, {"[g::1]:80", false},
		{"[fe80::1%eth0]:80", false}, {"unix:rel.sock", false}, {"unix:80", false}, {"unix:/", false},
		{"unix:", false}, {"unix:/a b", false}, {"unix:/a\x00", false}, {"unix:/" + strings.Repeat("a", 251), false},
		{"host:80\n", false},
	} {
		err := CheckEndpoint(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckEndpoint(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("CheckEndpoint(%q) error does not wrap ErrMalformed", tc.in)
		}
	}
}

func TestCheckRegion(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true}, {"eu-west", true}, {"eu west (2)", true}, {strings.Repeat("r", 64), true},
		{strings.Repeat("r", 65), false}, {"eu\nwest", false}, {"\x1b[31m", false}, {"zürich", false}, {"\x7f", false},
	} {
		if err := CheckRegion(tc.in); (err == nil) != tc.ok {
			t.Errorf("CheckRegion(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

// TestCheckKey holds checkKey's answer to the slow reference decoder of
// edwards_test.go, for edge encodings and for random bytes.
func TestCheckKey(t *testing.T) {
	var inputs [][]byte
	for _, y := range []*big.Int{big.NewInt(0), big.NewInt(1), big.NewInt(2), big.NewInt(18), big.NewInt(19),
		new(big.Int).Sub(fieldP, bigOne), fieldP, new(big.Int).Add(fieldP, bigOne), new(big.Int).Add(fieldP, big.NewInt(18)),
		new(big.Int).Sub(new(big.Int).Lsh(bigOne, 255), bigOne)} {
		inputs = append(inputs, edEncodeY(y, 0), edEncodeY(y, 1))
	}
	inputs = append(inputs, smallOrderPoints...)
	seed := sha512.Sum512([]byte("checkKey"))
	for i := range 400 {
		seed = sha512.Sum512(seed[:])
		b := bytes.Clone(seed[:32])
		if i%2 == 0 {
			b[31] &= 0x7f
		}
		inputs = append(inputs, b)
	}
	for i := range 8 {
		inputs = append(inputs, testKey(byte(i)).Public().(ed25519.PublicKey))
	}
	var points, small int
	for _, in := range inputs {
		p, ok := edDecode(in)
		err := checkKey(in)
		switch {
		case !ok:
			if !errors.Is(err, ErrNonCanonicalKey) {
				t.Errorf("%x: not a canonical point, checkKey says %v", in, err)
			}
		case edEqual(edMul(big.NewInt(8), p), edIdentity):
			small++
			if !errors.Is(err, ErrSmallOrderKey) {
				t.Errorf("%x: small order, checkKey says %v", in, err)
			}
		default:
			points++
			if err != nil {
				t.Errorf("%x: a valid point, checkKey says %v", in, err)
			}
		}
	}
	if points < 100 || small != 8+4 { // y = 0, 1, p-1 with both signs canonical: 4 of the edge inputs
		t.Fatalf("%d points, %d small-order inputs: the inputs do not cover the cases", points, small)
	}
	// S is canonical below L, not at or above it.
	lm1 := leScalar(new(big.Int).Sub(groupLn, bigOne))
	if !scalarBelowL(lm1) || scalarBelowL(groupL) || scalarBelowL(bytes.Repeat([]byte{0xff}, 32)) || !scalarBelowL(make([]byte, 32)) {
		t.Fatal("scalarBelowL is wrong at the edges")
	}
}

// TestSignRefuses: Sign does not make a record that Decode would refuse.
func TestSignRefuses(t *testing.T) {
	priv := testKey(1)
	for name, edit := range map[string]func(*Record){
		"endpoint without port": func(r *Record) { r.Endpoints = []string{"host"} },
		"relative unix path":    func(r *Record) { r.Endpoints = []string{"unix:x.sock"} },
		"region with a newline": func(r *Record) { r.Region = "a\nb" },
		"manifest of codec raw": func(r *Record) {
			r.Manifest = cid.NewCidV1(cid.Raw, cid.MustParse("baf4bcfd4bh5gdnl6n7fygqbk6hbtfbqgmkbqvci").Hash())
		},
		"seq 0":             func(r *Record) { r.Seq = 0 },
		"seq over 2^63-1":   func(r *Record) { r.Seq = MaxSeq + 1 },
		"issued pre-1970":   func(r *Record) { r.Issued, r.Expires = time.UnixMilli(-10), time.UnixMilli(10) },
		"lifetime 61 s":     func(r *Record) { r.Expires = r.Issued.Add(61 * time.Second) },
		"no endpoints":      func(r *Record) { r.Endpoints = nil },
		"bad name":          func(r *Record) { r.Name = "x" },
		"withdrawal w/ eps": func(r *Record) { r.Withdrawn = true },
	} {
		r := testRecord(priv)
		edit(&r)
		if _, err := Sign(priv, r); err == nil {
			t.Errorf("%s: Sign succeeded", name)
		}
	}
}

// vectorInputs returns the inputs of the conformance vectors of kind.
func vectorInputs(tb testing.TB, kind string) [][]byte {
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		tb.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, v := range f.Vectors {
		if v.Kind == kind {
			raw, _ := hex.DecodeString(v.Input)
			out = append(out, raw)
		}
	}
	return out
}

// FuzzCBOR: whatever decodeCBOR accepts and finds canonical re-encodes to
// the same bytes, and decoding never panics.
func FuzzCBOR(f *testing.F) {
	for _, raw := range vectorInputs(f, "record") {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := decodeCBOR(raw)
		if err != nil {
			return
		}
		if canonicalCBOR(raw, v) == nil && !bytes.Equal(encodeCBOR(nil, v), raw) {
			t.Fatal("canonical input re-encodes to other bytes")
		}
	})
}
