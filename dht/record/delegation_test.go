package record

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

func testDelegation(t testing.TB, pub ed25519.PrivateKey, name string, node ed25519.PublicKey, issued time.Time, ttl time.Duration) *Delegation {
	t.Helper()
	d, err := SignDelegation(pub, Delegation{Name: name, Node: node, Issued: issued, NotAfter: issued.Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func delegatedRecord(t testing.TB, node ed25519.PrivateKey, d *Delegation) *Record {
	t.Helper()
	r := testRecord(node)
	r.Delegation = d
	s, err := Sign(node, r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDelegationRejects(t *testing.T) {
	node, other, publisher, stranger := testKey(1), testKey(2), testKey(10), testKey(11)
	nodePub := node.Public().(ed25519.PublicKey)
	now := t0.Add(10 * time.Second)
	good := testDelegation(t, publisher, "acme/exchange", nodePub, t0.Add(-time.Hour), 24*time.Hour)

	// forgeSigner keeps good's body (naming publisher) but signs it with
	// stranger: a delegation not signed by the key it names.
	forgeSigner := func() *Delegation {
		var env envelope
		_ = cbor.Unmarshal(good.Bytes(), &env)
		env.Sig = signDomain(stranger, DelegationDomain, env.Body)
		raw, _ := encMode.Marshal(env)
		return &Delegation{Name: good.Name, Node: good.Node, Publisher: good.Publisher, Issued: good.Issued, NotAfter: good.NotAfter, raw: raw}
	}
	for _, tc := range []struct {
		name    string
		signer  ed25519.PrivateKey // the node key signing the record
		d       *Delegation
		atTime  time.Time
		wantErr bool
	}{
		{"good", node, good, now, false},
		{"for another name", node, testDelegation(t, publisher, "acme/other", nodePub, t0.Add(-time.Hour), time.Hour*24), now, true},
		{"for another node", other, good, now, true},
		{"expired", node, testDelegation(t, publisher, "acme/exchange", nodePub, t0.Add(-48*time.Hour), 24*time.Hour), now, true},
		{"expired within skew", node, testDelegation(t, publisher, "acme/exchange", nodePub, t0.Add(-time.Hour), time.Hour), t0.Add(MaxSkew), false},
		{"not yet valid", node, testDelegation(t, publisher, "acme/exchange", nodePub, t0.Add(time.Hour), time.Hour), now, true},
		{"not signed by the key it names", node, forgeSigner(), now, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRecord(tc.signer)
			r.Delegation = tc.d
			s, err := Sign(tc.signer, r)
			var raw []byte
			if err == nil {
				raw = s.Bytes()
			} else {
				// Sign refuses a delegation for another name or node; build
				// the record anyway, as a forger would.
				raw = reencode(t, mustSign(t, tc.signer, testRecord(tc.signer)), tc.signer, func(b *body) { b.Delegate = tc.d.Bytes() })
			}
			got, err := Verify(raw, "acme/exchange", tc.atTime)
			if tc.wantErr {
				if !errors.Is(err, ErrDelegation) {
					t.Fatalf("Verify = %v, want ErrDelegation", err)
				}
				if Reason(err) != "delegation" {
					t.Fatalf("Reason = %s", Reason(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Publisher(), publisher.Public().(ed25519.PublicKey)) {
				t.Fatal("Publisher() is not the delegating key")
			}
		})
	}
	if _, err := SignDelegation(publisher, Delegation{Name: "acme/x", Node: nodePub, Issued: t0, NotAfter: t0.Add(MaxDelegationTTL + time.Millisecond)}); !errors.Is(err, ErrDelegation) {
		t.Fatalf("TTL over the limit: %v", err)
	}
	if _, err := DecodeDelegation(make([]byte, MaxDelegationSize+1)); !errors.Is(err, ErrDelegation) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestDelegationTamper(t *testing.T) {
	d := testDelegation(t, testKey(10), "acme/exchange", testKey(1).Public().(ed25519.PublicKey), t0, time.Hour)
	raw := d.Bytes()
	for i := range raw {
		for bit := range 8 {
			b := bytes.Clone(raw)
			b[i] ^= 1 << bit
			if _, err := DecodeDelegation(b); err == nil {
				t.Fatalf("flipping byte %d bit %d still verifies", i, bit)
			}
		}
	}
}

func FuzzDecodeDelegation(f *testing.F) {
	for _, raw := range vectorInputs(f, "delegation") {
		f.Add(raw)
	}
	d := testDelegation(f, testKey(10), "acme/exchange", testKey(1).Public().(ed25519.PublicKey), t0, time.Hour)
	f.Add(d.Bytes())
	f.Add([]byte{0xa2, 0x01, 0x40, 0x02, 0x40})
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := DecodeDelegation(raw)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Bytes(), raw) {
			t.Fatal("accepted bytes differ from Bytes()")
		}
		body, _, _ := openEnvelope(raw)
		again, err := encMode.Marshal(delegationBody{Version: FormatVersion, Name: d.Name, Node: d.Node, Publisher: d.Publisher,
			Issued: uint64(d.Issued.UnixMilli()), NotAfter: uint64(d.NotAfter.UnixMilli())})
		if err != nil || !bytes.Equal(again, body) {
			t.Fatal("the fields of an accepted delegation encode to other bytes")
		}
	})
}

// TestGoldenDelegated pins the delegation format and a delegated record.
func TestGoldenDelegated(t *testing.T) {
	const path = "testdata/delegated_v2.json"
	node, publisher := testKey(7), testKey(8)
	d := testDelegation(t, publisher, "acme/exchange", node.Public().(ed25519.PublicKey), t0.Add(-time.Hour), 7*24*time.Hour)
	r := delegatedRecord(t, node, d)
	got := map[string]string{
		"comment":         "delegation v2: plain Ed25519 by the publisher key over 0x16 || \"cellnode/delegation/v2\" || body; the record carries it under body key 11. See docs/records.md",
		"node_seed_hex":   hex.EncodeToString(node.Seed()),
		"publisher_seed":  hex.EncodeToString(publisher.Seed()),
		"delegation_hex":  hex.EncodeToString(d.Bytes()),
		"record_hex":      hex.EncodeToString(r.Bytes()),
		"verify_at_ms":    "1795694400000",
		"publisher_key":   hex.EncodeToString(publisher.Public().(ed25519.PublicKey)),
		"delegation_name": d.Name,
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
	var want map[string]string
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got["delegation_hex"] != want["delegation_hex"] || got["record_hex"] != want["record_hex"] {
		t.Fatalf("signed format changed:\n got %s\nwant %s", got["record_hex"], want["record_hex"])
	}
	raw, _ := hex.DecodeString(want["record_hex"])
	rec, err := Verify(raw, "acme/exchange", t0)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(rec.Publisher()) != want["publisher_key"] {
		t.Fatal("golden record's publisher differs")
	}
}
