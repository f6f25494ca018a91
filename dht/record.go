package dht

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Limits and rules of instance records. They are part of the format: a
// storer or finder that used other values would disagree with the network.
const (
	// MaxRecordSize is the largest encoded record, in bytes. Larger input is
	// rejected before any parsing.
	MaxRecordSize = 4096
	// MaxLifetime is the longest allowed expires-at minus issued-at.
	MaxLifetime = 60 * time.Second
	// MaxSkew is the clock difference tolerated between publisher, storer and
	// finder: a record may be issued up to MaxSkew in the future, and stays
	// valid until MaxSkew after it expires.
	MaxSkew = 5 * time.Second
	// MaxEndpoints is the most service endpoints one record may carry.
	MaxEndpoints = 16
	// MaxEndpointLen is the longest endpoint string, in bytes.
	MaxEndpointLen = 256
	// MaxRegionLen is the longest region string, in bytes.
	MaxRegionLen = 64
	// SignatureContext is the Ed25519ctx context (RFC 8032) of the record
	// signature. It separates record signatures from every other use of a
	// node key, including libp2p's own pure-Ed25519 signatures.
	SignatureContext = "cellnode/instance/v1"
	// FormatVersion is the body version this package writes and accepts.
	FormatVersion = 1
)

// Errors returned (wrapped) by Decode, Check and the store. Each names one
// reason a record is rejected; Reason maps them to stable metric labels.
var (
	ErrTooLarge     = errors.New("dht: record too large")
	ErrMalformed    = errors.New("dht: malformed record")
	ErrNonCanonical = errors.New("dht: record not in canonical encoding")
	ErrBadSignature = errors.New("dht: bad record signature")
	ErrPeerMismatch = errors.New("dht: record peer id does not match its key")
	ErrLifetime     = errors.New("dht: record lifetime over 60s")
	ErrFuture       = errors.New("dht: record issued in the future")
	ErrExpired      = errors.New("dht: record expired")
	ErrWrongName    = errors.New("dht: record for another cell name")
	ErrStale        = errors.New("dht: record older than the one held")
	// ErrWrongPublisher means a record was sent for a publisher's set but
	// is not delegated by that publisher.
	ErrWrongPublisher = errors.New("dht: record not delegated by the publisher asked for")
)

// Record is one instance of a cell: who runs it and where to reach it, for
// how long. A Record returned by Decode or Sign also holds its exact signed
// bytes (see Bytes); changing its fields afterwards does not change them.
type Record struct {
	Name      string            // cell name, "org/name"
	Peer      peer.ID           // the publishing node; derived from PublicKey
	PublicKey ed25519.PublicKey // the node's key, which signs the record
	Endpoints []string          // service endpoints: "host:port" or "unix:/path"
	Region    string            // optional, free-form, at most 64 bytes
	Manifest  cid.Cid           // optional commit CID of the cell's manifest
	Seq       uint64            // strictly increasing per node; never reused
	Issued    time.Time         // millisecond precision
	Expires   time.Time         // millisecond precision, at most Issued+60s
	Withdrawn bool              // the instance is gone; Endpoints is empty
	// Delegation, when not nil, ties the record to a publisher key listed
	// in the cell's manifest; nil means an open (unverified) record.
	Delegation *Delegation

	raw []byte
}

// Publisher returns the publisher key that delegated the record, or nil for
// an open record.
func (r *Record) Publisher() ed25519.PublicKey {
	if r.Delegation == nil {
		return nil
	}
	return r.Delegation.Publisher
}

// Bytes returns the signed encoding of r, or nil if r was never signed or
// decoded. The caller must not modify it.
func (r *Record) Bytes() []byte { return r.raw }

// body is the signed part, as CBOR map with small integer keys. The field
// numbers are frozen: a new field gets a new number, never an old one.
type body struct {
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

// envelope is what goes on the wire: the body bytes and their signature.
type envelope struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Core deterministic encoding (RFC 8949 §4.2.1): shortest forms, sorted keys.
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxArrayElements:  MaxEndpoints * 4,
		MaxMapPairs:       32,
		MaxNestedLevels:   4,
		UTF8:              cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// Sign encodes r canonically and signs it with priv, which must be the key
// whose public half is r.PublicKey. It fills in r.Peer from the key, checks
// the record's static rules (not its time against a clock) and returns the
// signed record; r itself is not modified.
func Sign(priv ed25519.PrivateKey, r Record) (*Record, error) {
	pub, ok := priv.Public().(ed25519.PublicKey)
	if !ok || !bytes.Equal(pub, r.PublicKey) {
		return nil, fmt.Errorf("dht: sign: private key does not match record public key")
	}
	id, err := peerIDOf(pub)
	if err != nil {
		return nil, err
	}
	r.Peer = id
	r.raw = nil
	if err := r.checkStatic(); err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	b := body{
		Version:   FormatVersion,
		Name:      r.Name,
		Peer:      []byte(r.Peer),
		Key:       []byte(r.PublicKey),
		Endpoints: r.Endpoints,
		Region:    r.Region,
		Seq:       r.Seq,
		Issued:    r.Issued.UnixMilli(),
		Expires:   r.Expires.UnixMilli(),
		Withdrawn: r.Withdrawn,
	}
	if b.Endpoints == nil {
		b.Endpoints = []string{}
	}
	if r.Manifest.Defined() {
		b.Manifest = r.Manifest.Bytes()
	}
	if r.Delegation != nil {
		if b.Delegate = r.Delegation.Bytes(); b.Delegate == nil {
			return nil, fmt.Errorf("dht: sign: delegation is not signed")
		}
	}
	bb, err := encMode.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	sig := ed25519Sign(priv, bb)
	raw, err := encMode.Marshal(envelope{Body: bb, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	if len(raw) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxRecordSize)
	}
	out := r
	out.Issued = time.UnixMilli(b.Issued).UTC()
	out.Expires = time.UnixMilli(b.Expires).UTC()
	out.raw = raw
	return &out, nil
}

// Decode parses and verifies signed record bytes: size (before parsing),
// canonical encoding of the envelope and the body (input that does not
// re-encode to the same bytes is rejected), the static rules, the peer ID
// against the public key, and the signature. It does not look at a clock:
// call Check for that. The returned error wraps one of the package's
// sentinel errors.
func Decode(raw []byte) (*Record, error) {
	if len(raw) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxRecordSize)
	}
	var env envelope
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if err := canonical(raw, env); err != nil {
		return nil, err
	}
	var b body
	if err := decMode.Unmarshal(env.Body, &b); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	if err := canonical(env.Body, b); err != nil {
		return nil, err
	}
	if b.Version != FormatVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, b.Version, FormatVersion)
	}
	if b.Endpoints == nil {
		return nil, fmt.Errorf("%w: endpoints missing or null", ErrMalformed)
	}
	if len(b.Key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(b.Key), ed25519.PublicKeySize)
	}
	r := &Record{
		Name:      b.Name,
		PublicKey: ed25519.PublicKey(b.Key),
		Endpoints: b.Endpoints,
		Region:    b.Region,
		Seq:       b.Seq,
		Issued:    time.UnixMilli(b.Issued).UTC(),
		Expires:   time.UnixMilli(b.Expires).UTC(),
		Withdrawn: b.Withdrawn,
	}
	id, err := peer.IDFromBytes(b.Peer)
	if err != nil {
		return nil, fmt.Errorf("%w: peer id: %v", ErrMalformed, err)
	}
	r.Peer = id
	if b.Manifest != nil {
		c, err := cid.Cast(b.Manifest)
		if err != nil {
			return nil, fmt.Errorf("%w: manifest cid: %v", ErrMalformed, err)
		}
		r.Manifest = c
	}
	if b.Delegate != nil {
		if r.Delegation, err = DecodeDelegation(b.Delegate); err != nil {
			return nil, err
		}
	}
	if err := r.checkStatic(); err != nil {
		return nil, err
	}
	want, err := peerIDOf(r.PublicKey)
	if err != nil {
		return nil, err
	}
	if want != r.Peer {
		return nil, fmt.Errorf("%w: record says %s, key gives %s", ErrPeerMismatch, r.Peer, want)
	}
	if len(env.Sig) != ed25519.SignatureSize || !ed25519Verify(r.PublicKey, env.Body, env.Sig) {
		return nil, ErrBadSignature
	}
	r.raw = bytes.Clone(raw)
	return r, nil
}

// canonical reports ErrNonCanonical unless v encodes to exactly raw.
func canonical(raw []byte, v any) error {
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, raw) {
		return ErrNonCanonical
	}
	return nil
}

// checkStatic checks the rules that do not depend on a clock.
func (r *Record) checkStatic() error {
	if _, err := ParseName(r.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(r.Endpoints) > MaxEndpoints {
		return fmt.Errorf("%w: %d endpoints, limit %d", ErrMalformed, len(r.Endpoints), MaxEndpoints)
	}
	if r.Withdrawn && len(r.Endpoints) > 0 {
		return fmt.Errorf("%w: withdrawal with endpoints", ErrMalformed)
	}
	if !r.Withdrawn && len(r.Endpoints) == 0 {
		return fmt.Errorf("%w: no endpoints", ErrMalformed)
	}
	for _, e := range r.Endpoints {
		if e == "" || len(e) > MaxEndpointLen {
			return fmt.Errorf("%w: endpoint of %d bytes (1-%d allowed)", ErrMalformed, len(e), MaxEndpointLen)
		}
	}
	if len(r.Region) > MaxRegionLen {
		return fmt.Errorf("%w: region of %d bytes, limit %d", ErrMalformed, len(r.Region), MaxRegionLen)
	}
	if r.Seq == 0 {
		return fmt.Errorf("%w: sequence number 0", ErrMalformed)
	}
	if r.Delegation != nil {
		if err := r.Delegation.covers(r.Name, r.PublicKey); err != nil {
			return err
		}
	}
	life := r.Expires.Sub(r.Issued)
	if life <= 0 {
		return fmt.Errorf("%w: expires %v before it is issued", ErrMalformed, -life)
	}
	if life > MaxLifetime {
		return fmt.Errorf("%w: lifetime %v", ErrLifetime, life)
	}
	return nil
}

// Check reports whether the record is live at now: issued no more than
// MaxSkew in the future, now no later than Expires+MaxSkew, and its
// delegation, if any, valid at now. The error wraps ErrFuture, ErrExpired
// or ErrDelegation.
func (r *Record) Check(now time.Time) error {
	if r.Issued.After(now.Add(MaxSkew)) {
		return fmt.Errorf("%w: issued %v ahead of this clock", ErrFuture, r.Issued.Sub(now).Round(time.Millisecond))
	}
	if now.After(r.Expires.Add(MaxSkew)) {
		return fmt.Errorf("%w: %v ago", ErrExpired, now.Sub(r.Expires).Round(time.Millisecond))
	}
	if r.Delegation != nil {
		return r.Delegation.live(now)
	}
	return nil
}

// Verify decodes raw, checks it is live at now and, if name is not empty,
// that it is a record of that cell. It is what storers and finders run on
// every record they receive.
func Verify(raw []byte, name string, now time.Time) (*Record, error) {
	r, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	if name != "" && r.Name != name {
		return nil, fmt.Errorf("%w: %q, want %q", ErrWrongName, r.Name, name)
	}
	if err := r.Check(now); err != nil {
		return nil, err
	}
	return r, nil
}

// Reason maps a rejection error to a short stable label for metrics:
// "too_large", "malformed", "non_canonical", "bad_signature",
// "peer_mismatch", "lifetime", "future", "expired", "wrong_name", "stale",
// "delegation", "wrong_publisher", or "other".
func Reason(err error) string {
	for _, c := range []struct {
		err   error
		label string
	}{
		{ErrTooLarge, "too_large"}, {ErrMalformed, "malformed"},
		{ErrNonCanonical, "non_canonical"}, {ErrBadSignature, "bad_signature"},
		{ErrPeerMismatch, "peer_mismatch"}, {ErrLifetime, "lifetime"},
		{ErrFuture, "future"}, {ErrExpired, "expired"},
		{ErrWrongName, "wrong_name"}, {ErrStale, "stale"},
		{ErrDelegation, "delegation"}, {ErrWrongPublisher, "wrong_publisher"},
	} {
		if errors.Is(err, c.err) {
			return c.label
		}
	}
	return "other"
}

func peerIDOf(pub ed25519.PublicKey) (peer.ID, error) {
	pk, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	return peer.IDFromPublicKey(pk)
}

func ed25519Sign(priv ed25519.PrivateKey, msg []byte) []byte {
	sig, err := priv.Sign(nil, msg, &ed25519.Options{Context: SignatureContext})
	if err != nil { // only for a context over 255 bytes, which ours is not
		panic(err)
	}
	return sig
}

func ed25519Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	return ed25519.VerifyWithOptions(pub, msg, sig, &ed25519.Options{Context: SignatureContext}) == nil
}
