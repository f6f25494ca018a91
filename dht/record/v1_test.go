package record

// Format 1, as dht/record/record.go implemented it before format 2 retired it
// (commit 361e972), kept here only so that the benchmarks can put the two
// side by side: Ed25519ctx signatures, fxamacker/cbor decoding with
// re-encoding, peer ID derived through libp2p's key types. Open records
// only (no delegation), which is what the benchmarks measure.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const v1Context = "cellnode/instance/v1"

type v1Body struct {
	Version   uint64   `cbor:"0,keyasint"`
	Name      string   `cbor:"1,keyasint"`
	Peer      []byte   `cbor:"2,keyasint"`
	Key       []byte   `cbor:"3,keyasint"`
	Endpoints []string `cbor:"4,keyasint"`
	Region    string   `cbor:"5,keyasint,omitempty"`
	Manifest  []byte   `cbor:"6,keyasint,omitempty"`
	Seq       uint64   `cbor:"7,keyasint"`
	Issued    int64    `cbor:"8,keyasint"`
	Expires   int64    `cbor:"9,keyasint"`
	Withdrawn bool     `cbor:"10,keyasint,omitempty"`
	Delegate  []byte   `cbor:"11,keyasint,omitempty"`
}

var v1DecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxArrayElements:  MaxEndpoints * 4,
		MaxMapPairs:       32,
		MaxNestedLevels:   4,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

func v1PeerIDOf(pub ed25519.PublicKey) (peer.ID, error) {
	pk, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pk)
}

func v1Canonical(raw []byte, v any) error {
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, raw) {
		return ErrNonCanonical
	}
	return nil
}

// v1CheckStatic is format 1's checkStatic for an open record.
func v1CheckStatic(r *Record) error {
	if _, err := ParseName(r.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(r.Endpoints) > MaxEndpoints {
		return ErrMalformed
	}
	if r.Withdrawn && len(r.Endpoints) > 0 || !r.Withdrawn && len(r.Endpoints) == 0 {
		return ErrMalformed
	}
	for _, e := range r.Endpoints {
		if e == "" || len(e) > MaxEndpointLen {
			return ErrMalformed
		}
	}
	if len(r.Region) > MaxRegionLen || r.Seq == 0 {
		return ErrMalformed
	}
	life := r.Expires.Sub(r.Issued)
	if life <= 0 || life > MaxLifetime {
		return ErrMalformed
	}
	return nil
}

// v1Sign is format 1's Sign.
func v1Sign(priv ed25519.PrivateKey, r Record) (*Record, error) {
	pub := priv.Public().(ed25519.PublicKey)
	id, err := v1PeerIDOf(pub)
	if err != nil {
		return nil, err
	}
	r.Peer = id
	if err := v1CheckStatic(&r); err != nil {
		return nil, err
	}
	b := v1Body{Version: 1, Name: r.Name, Peer: []byte(r.Peer), Key: []byte(r.PublicKey), Endpoints: r.Endpoints,
		Region: r.Region, Seq: r.Seq, Issued: r.Issued.UnixMilli(), Expires: r.Expires.UnixMilli(), Withdrawn: r.Withdrawn}
	if r.Manifest.Defined() {
		b.Manifest = r.Manifest.Bytes()
	}
	bb, err := encMode.Marshal(b)
	if err != nil {
		return nil, err
	}
	sig, err := priv.Sign(nil, bb, &ed25519.Options{Context: v1Context})
	if err != nil {
		return nil, err
	}
	raw, err := encMode.Marshal(envelope{Body: bb, Sig: sig})
	if err != nil {
		return nil, err
	}
	out := r
	out.raw = raw
	return &out, nil
}

// v1Verify is format 1's Verify (Decode, name, clock) for an open record.
func v1Verify(raw []byte, name string, now time.Time) (*Record, error) {
	if len(raw) > MaxRecordSize {
		return nil, ErrTooLarge
	}
	var env envelope
	if err := v1DecMode.Unmarshal(raw, &env); err != nil {
		return nil, ErrMalformed
	}
	if err := v1Canonical(raw, env); err != nil {
		return nil, err
	}
	var b v1Body
	if err := v1DecMode.Unmarshal(env.Body, &b); err != nil {
		return nil, ErrMalformed
	}
	if err := v1Canonical(env.Body, b); err != nil {
		return nil, err
	}
	if b.Version != 1 || b.Endpoints == nil || len(b.Key) != ed25519.PublicKeySize {
		return nil, ErrMalformed
	}
	r := &Record{Name: b.Name, PublicKey: ed25519.PublicKey(b.Key), Endpoints: b.Endpoints, Region: b.Region, Seq: b.Seq,
		Issued: time.UnixMilli(b.Issued).UTC(), Expires: time.UnixMilli(b.Expires).UTC(), Withdrawn: b.Withdrawn}
	id, err := peer.IDFromBytes(b.Peer)
	if err != nil {
		return nil, ErrMalformed
	}
	r.Peer = id
	if b.Manifest != nil {
		if r.Manifest, err = cid.Cast(b.Manifest); err != nil {
			return nil, ErrMalformed
		}
	}
	if err := v1CheckStatic(r); err != nil {
		return nil, err
	}
	want, err := v1PeerIDOf(r.PublicKey)
	if err != nil || want != r.Peer {
		return nil, ErrPeerMismatch
	}
	if len(env.Sig) != ed25519.SignatureSize || ed25519.VerifyWithOptions(r.PublicKey, env.Body, env.Sig, &ed25519.Options{Context: v1Context}) != nil {
		return nil, ErrBadSignature
	}
	if name != "" && r.Name != name {
		return nil, ErrWrongName
	}
	if err := r.Check(now); err != nil {
		return nil, err
	}
	r.raw = bytes.Clone(raw)
	return r, nil
}

// TestV1Retired: the format 1 golden record still verifies under the
// benchmark's copy of format 1, and is refused by format 2.
func TestV1Retired(t *testing.T) {
	b, err := os.ReadFile("testdata/record_v1_retired.hex")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := hex.DecodeString(strings.TrimSpace(string(b)))
	if _, err := v1Verify(raw, "acme/exchange", t0); err != nil {
		t.Fatalf("format 1 copy: %v", err)
	}
	if _, err := Verify(raw, "acme/exchange", t0); Reason(err) != "malformed" {
		t.Fatalf("format 2 on a format 1 record: %v", err)
	}
	again, err := v1Sign(testKey(7), func() Record {
		r := testRecord(testKey(7))
		r.Manifest = cid.MustParse("baf4bcfd4bh5gdnl6n7fygqbk6hbtfbqgmkbqvci")
		return r
	}())
	if err != nil || !bytes.Equal(again.Bytes(), raw) {
		t.Fatalf("format 1 copy does not sign the golden bytes: %v", err)
	}
}
