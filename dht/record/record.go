package record

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
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
	// MaxSeq is the largest sequence number (2^63-1, so that it fits a
	// signed 64-bit integer in every language).
	MaxSeq = 1<<63 - 1
	// MaxUnixMilli is the latest time a record or delegation may name,
	// 9999-12-31T23:59:59.999Z in milliseconds since the Unix epoch; times
	// before the epoch are not allowed either. Every such value is exact in
	// an IEEE double.
	MaxUnixMilli = 253402300799999
	// MaxShards is the largest shard count a record may carry (body key
	// 12): a cell's instances are spread over at most 64 sets.
	MaxShards = 64
	// FormatVersion is the body version this package writes and accepts.
	// Version 1 (Ed25519ctx signatures) is retired: no network ran it.
	FormatVersion = 2
)

// Errors returned (wrapped) by Decode, Check and the store. Each names one
// reason a record is rejected; Reason maps them to stable metric labels.
var (
	ErrTooLarge     = errors.New("dht: record too large")
	ErrMalformed    = errors.New("dht: malformed record")
	ErrNonCanonical = errors.New("dht: record not in canonical encoding")
	// ErrNonCanonicalKey: the public key is not the canonical encoding of a
	// point of edwards25519.
	ErrNonCanonicalKey = errors.New("dht: public key is not a canonical curve point")
	// ErrSmallOrderKey: the public key is a point of small order, for which
	// anyone can make signatures that verify.
	ErrSmallOrderKey = errors.New("dht: public key of small order")
	// ErrNonCanonicalSignature: the signature's S is not below the group
	// order (a malleated copy of a signature).
	ErrNonCanonicalSignature = errors.New("dht: signature not canonical (S >= L)")
	ErrBadSignature          = errors.New("dht: bad record signature")
	ErrPeerMismatch          = errors.New("dht: record peer id does not match its key")
	ErrLifetime              = errors.New("dht: lifetime over the limit")
	ErrFuture                = errors.New("dht: issued in the future")
	ErrExpired               = errors.New("dht: expired")
	ErrWrongName             = errors.New("dht: for another cell name")
	// ErrWrongShard: the record is not in the shard it was stored in or
	// asked for (ShardOf its peer and shard count is another one).
	ErrWrongShard = errors.New("dht: record in the wrong shard")
	ErrStale      = errors.New("dht: record older than the one held")
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
	Endpoints []string          // service endpoints (CheckEndpoint): "host:port" or "unix:/path"
	Region    string            // optional (CheckRegion): printable ASCII, at most 64 bytes
	Manifest  cid.Cid           // optional commit CID of the cell's manifest: CIDv1, git-raw, sha1
	Seq       uint64            // 1 to MaxSeq, strictly increasing per node; never reused
	Issued    time.Time         // millisecond precision
	Expires   time.Time         // millisecond precision, at most Issued+60s
	Withdrawn bool              // the instance is gone; Endpoints is empty
	// Shards is the number of sets the cell's instances are spread over
	// (body key 12): a power of two, 1 to MaxShards; 0 means 1. The record
	// belongs in shard ShardOf(Peer, Shards) (see docs/records.md,
	// "Shards").
	Shards int
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

// ShardCount returns the record's shard count, at least 1.
func (r *Record) ShardCount() int { return max(1, r.Shards) }

// Shard returns the shard the record belongs in: ShardOf its peer and
// shard count.
func (r *Record) Shard() int { return ShardOf(r.Peer, r.ShardCount()) }

// ShardOf returns the shard of the instance of peer p among shards sets
// (a power of two): the first byte of SHA-256 of the peer ID's bytes,
// modulo shards. Doubling the count keeps an instance in its shard or
// moves it to shard+old count, never elsewhere.
func ShardOf(p peer.ID, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := sha256.Sum256([]byte(p))
	return int(h[0]) & (shards - 1)
}

// CheckShards checks a shard count as a record carries it: a power of
// two from 1 to MaxShards. The error wraps ErrMalformed.
func CheckShards(n int) error {
	if n < 1 || n > MaxShards || n&(n-1) != 0 {
		return fmt.Errorf("%w: shard count %d, want a power of two from 1 to %d", ErrMalformed, n, MaxShards)
	}
	return nil
}

// Bytes returns the signed encoding of r, or nil if r was never signed or
// decoded. The caller must not modify it.
func (r *Record) Bytes() []byte { return r.raw }

// body is the signed part, a CBOR map with small integer keys. The field
// numbers are frozen: a new field gets a new number, never an old one.
// Sign encodes it with encMode; Decode reads it with decodeCBOR (FuzzDecode
// checks that encMode gives back the bytes of whatever Decode accepts).
type body struct {
	Version   uint64   `cbor:"0,keyasint"`
	Name      string   `cbor:"1,keyasint"`
	Peer      []byte   `cbor:"2,keyasint"`
	Key       []byte   `cbor:"3,keyasint"`
	Endpoints []string `cbor:"4,keyasint"`
	Region    string   `cbor:"5,keyasint,omitempty"`
	Manifest  []byte   `cbor:"6,keyasint,omitempty"`
	Seq       uint64   `cbor:"7,keyasint"`
	Issued    uint64   `cbor:"8,keyasint"`
	Expires   uint64   `cbor:"9,keyasint"`
	Withdrawn bool     `cbor:"10,keyasint,omitempty"`
	Delegate  []byte   `cbor:"11,keyasint,omitempty"`
	Shards    uint64   `cbor:"12,keyasint,omitempty"` // absent (0 here) means 1
	hasShards bool     // key 12 was present (Decode), so 0 or 1 is an error
}

var (
	bodyKeys     = []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	bodyRequired = []uint64{0, 1, 2, 3, 4, 7, 8, 9}
)

// envelope is what goes on the wire: the body bytes and their signature.
type envelope struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

// encMode is core deterministic encoding (RFC 8949 §4.2.1): shortest
// forms, sorted keys.
var encMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// peerIDBytes is the libp2p peer ID of an Ed25519 key: the identity
// multihash (0x00, length 0x24) of the key's protobuf encoding (type
// Ed25519 = 1, data = the 32 bytes).
func peerIDBytes(pub []byte) []byte {
	return append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, pub...)
}

// Sign encodes r canonically and signs it with priv, which must be the key
// whose public half is r.PublicKey. It fills in r.Peer from the key, checks
// every rule Decode checks except the clock's, and returns the signed
// record; r itself is not modified.
func Sign(priv ed25519.PrivateKey, r Record) (*Record, error) {
	pub, ok := priv.Public().(ed25519.PublicKey)
	if !ok || !bytes.Equal(pub, r.PublicKey) {
		return nil, fmt.Errorf("dht: sign: private key does not match record public key")
	}
	// A key made from a private key is always a curve point: the cheap
	// checks suffice (and never fail for a key from ed25519.GenerateKey).
	if err := checkKeyBytes(pub); err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	r.Peer = peer.ID(peerIDBytes(pub))
	r.raw = nil
	b, err := bodyOf(&r)
	if err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	if r.Delegation != nil {
		if b.Delegate == nil {
			return nil, fmt.Errorf("dht: sign: delegation is not signed")
		}
		if err := r.Delegation.covers(r.Name, r.PublicKey); err != nil {
			return nil, fmt.Errorf("dht: sign: %w", err)
		}
	}
	bb, err := encMode.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	sig := signDomain(priv, RecordDomain, bb)
	raw, err := encMode.Marshal(envelope{Body: bb, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("dht: sign: %w", err)
	}
	if len(raw) > MaxRecordSize {
		return nil, fmt.Errorf("dht: sign: %w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxRecordSize)
	}
	out := r
	out.Issued = time.UnixMilli(int64(b.Issued)).UTC()
	out.Expires = time.UnixMilli(int64(b.Expires)).UTC()
	out.raw = raw
	return &out, nil
}

// bodyOf is the body that encodes r's fields (r.Peer set).
func bodyOf(r *Record) (body, error) {
	b := body{
		Version:   FormatVersion,
		Name:      r.Name,
		Peer:      []byte(r.Peer),
		Key:       []byte(r.PublicKey),
		Endpoints: r.Endpoints,
		Region:    r.Region,
		Seq:       r.Seq,
		Withdrawn: r.Withdrawn,
	}
	if r.Shards < 0 || r.Shards > 1 {
		b.Shards, b.hasShards = uint64(r.Shards), true
	}
	var err error
	if b.Issued, err = unixMilli("issued", r.Issued); err != nil {
		return b, err
	}
	if b.Expires, err = unixMilli("expires", r.Expires); err != nil {
		return b, err
	}
	if b.Endpoints == nil {
		b.Endpoints = []string{}
	}
	if r.Manifest.Defined() {
		b.Manifest = r.Manifest.Bytes()
	}
	if r.Delegation != nil {
		b.Delegate = r.Delegation.Bytes()
	}
	return b, nil
}

// unixMilli returns t in milliseconds since the epoch, if within 0 to
// MaxUnixMilli.
func unixMilli(what string, t time.Time) (uint64, error) {
	ms := t.UnixMilli()
	if ms < 0 || ms > MaxUnixMilli {
		return 0, fmt.Errorf("%w: %s %v outside 1970 to 9999", ErrMalformed, what, t)
	}
	return uint64(ms), nil
}

// openEnvelope decodes the envelope of a record or delegation: a canonical
// map {1: body bytes, 2: 64-byte signature} and nothing else.
func openEnvelope(raw []byte) (bodyBytes, sig []byte, err error) {
	v, err := decodeCBOR(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("envelope: %w", err)
	}
	if err := canonicalCBOR(raw, v); err != nil {
		return nil, nil, fmt.Errorf("envelope: %w", err)
	}
	m := asMap("envelope", v, []uint64{1, 2}, []uint64{1, 2})
	bodyBytes, sig = m.bytes(1, false), m.bytes(2, false)
	if m.err == nil && len(sig) != ed25519.SignatureSize {
		m.err = fmt.Errorf("%w: signature of %d bytes, want %d", ErrMalformed, len(sig), ed25519.SignatureSize)
	}
	return bodyBytes, sig, m.err
}

// Decode parses and verifies signed record bytes, in the order of
// docs/records.md ("Verification"): size (before parsing); the envelope
// and the body, each decoded and re-encoded to check it is the one
// canonical encoding; the body's field rules; the key; the peer ID; the
// signature; the delegation, if any, and that it covers this name and key.
// It does not look at a clock: call Check for that. The returned error
// wraps one of the package's sentinel errors (see Reason).
func Decode(raw []byte) (*Record, error) {
	if len(raw) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxRecordSize)
	}
	bodyBytes, sig, err := openEnvelope(raw)
	if err != nil {
		return nil, err
	}
	v, err := decodeCBOR(bodyBytes)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if err := canonicalCBOR(bodyBytes, v); err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	m := asMap("body", v, bodyKeys, bodyRequired)
	b := body{
		Version:   m.uint(0),
		Name:      m.text(1, false),
		Peer:      m.bytes(2, false),
		Key:       m.bytes(3, false),
		Endpoints: m.texts(4),
		Region:    m.text(5, true),
		Manifest:  m.bytes(6, true),
		Seq:       m.uint(7),
		Issued:    m.uint(8),
		Expires:   m.uint(9),
		Withdrawn: m.flag(10),
		Delegate:  m.bytes(11, true),
	}
	b.Shards, b.hasShards = m.optUint(12)
	if m.err != nil {
		return nil, m.err
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	if err := checkKeyBytes(b.Key); err != nil {
		return nil, err
	}
	if err := verifyBy(b.Key, func() error {
		if !bytes.Equal(b.Peer, peerIDBytes(b.Key)) {
			return fmt.Errorf("%w: the peer field is not the peer ID of the key", ErrPeerMismatch)
		}
		return checkSignature(b.Key, SignedMessage(RecordDomain, bodyBytes), sig)
	}); err != nil {
		return nil, err
	}
	r := &Record{
		Name:      b.Name,
		Peer:      peer.ID(b.Peer),
		PublicKey: ed25519.PublicKey(bytes.Clone(b.Key)),
		Endpoints: b.Endpoints,
		Region:    b.Region,
		Seq:       b.Seq,
		Issued:    time.UnixMilli(int64(b.Issued)).UTC(),
		Expires:   time.UnixMilli(int64(b.Expires)).UTC(),
		Withdrawn: b.Withdrawn,
		Shards:    int(max(1, b.Shards)), // check() bounded it
	}
	if b.Manifest != nil {
		if r.Manifest, err = cid.Cast(b.Manifest); err != nil { // cannot fail: check() read its 24 bytes
			return nil, fmt.Errorf("%w: manifest cid: %v", ErrMalformed, err)
		}
	}
	if b.Delegate != nil {
		if r.Delegation, err = decodeDelegation(b.Delegate, b.Key); err != nil {
			return nil, err
		}
		if err := r.Delegation.covers(r.Name, r.PublicKey); err != nil {
			return nil, err
		}
	}
	r.raw = bytes.Clone(raw)
	return r, nil
}

// manifestPrefix starts every manifest CID: CIDv1 (0x01), codec git-raw
// (0x78), multihash sha1 (0x11) of 20 bytes (0x14).
var manifestPrefix = []byte{0x01, 0x78, 0x11, 0x14}

// check checks the body's field rules, in the documented order. Every
// failure is ErrMalformed, except a lifetime over 60 s (ErrLifetime),
// checked last.
func (b *body) check() error {
	if b.Version != FormatVersion {
		return fmt.Errorf("%w: version %d, want %d (version 1 is retired)", ErrMalformed, b.Version, FormatVersion)
	}
	if _, err := ParseName(b.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key of %d bytes, want %d", ErrMalformed, len(b.Key), ed25519.PublicKeySize)
	}
	if len(b.Endpoints) > MaxEndpoints {
		return fmt.Errorf("%w: %d endpoints, limit %d", ErrMalformed, len(b.Endpoints), MaxEndpoints)
	}
	for _, e := range b.Endpoints {
		if err := CheckEndpoint(e); err != nil {
			return err
		}
	}
	if b.Withdrawn && len(b.Endpoints) > 0 {
		return fmt.Errorf("%w: withdrawal with endpoints", ErrMalformed)
	}
	if !b.Withdrawn && len(b.Endpoints) == 0 {
		return fmt.Errorf("%w: no endpoints", ErrMalformed)
	}
	if err := CheckRegion(b.Region); err != nil {
		return err
	}
	if b.Manifest != nil && (len(b.Manifest) != len(manifestPrefix)+20 || !bytes.HasPrefix(b.Manifest, manifestPrefix)) {
		return fmt.Errorf("%w: manifest is not a CIDv1 git-raw sha1 (24 bytes starting 01781114)", ErrMalformed)
	}
	if b.Seq == 0 || b.Seq > MaxSeq {
		return fmt.Errorf("%w: sequence number %d (1 to 2^63-1 allowed)", ErrMalformed, b.Seq)
	}
	if b.hasShards {
		if b.Shards == 1 {
			return fmt.Errorf("%w: shard count 1 is present (leave key 12 out for one shard)", ErrMalformed)
		}
		if b.Shards < 2 || b.Shards > MaxShards || b.Shards&(b.Shards-1) != 0 {
			return fmt.Errorf("%w: shard count %d, want a power of two from 2 to %d (or key 12 left out)", ErrMalformed, b.Shards, MaxShards)
		}
	}
	if b.Issued > MaxUnixMilli || b.Expires > MaxUnixMilli {
		return fmt.Errorf("%w: time after %d ms (year 9999)", ErrMalformed, uint64(MaxUnixMilli))
	}
	if b.Expires <= b.Issued {
		return fmt.Errorf("%w: expires at or before it is issued", ErrMalformed)
	}
	if life := b.Expires - b.Issued; life > uint64(MaxLifetime.Milliseconds()) {
		return fmt.Errorf("%w: lifetime %d ms, limit %d", ErrLifetime, life, MaxLifetime.Milliseconds())
	}
	return nil
}

// Check reports whether the record is live at now: issued no more than
// MaxSkew in the future, now no later than Expires+MaxSkew, and its
// delegation, if any, live at now. The error wraps ErrFuture, ErrExpired
// or ErrDelegation.
func (r *Record) Check(now time.Time) error {
	if r.Issued.After(now.Add(MaxSkew)) {
		return fmt.Errorf("%w: record issued %v ahead of this clock", ErrFuture, r.Issued.Sub(now).Round(time.Millisecond))
	}
	if now.After(r.Expires.Add(MaxSkew)) {
		return fmt.Errorf("%w: record expired %v ago", ErrExpired, now.Sub(r.Expires).Round(time.Millisecond))
	}
	if r.Delegation != nil {
		return r.Delegation.live(now)
	}
	return nil
}

// Verify decodes raw, checks that it is a record of the cell name (when
// name is not empty) and that it is live at now. It is what storers and
// finders run on every record they receive.
func Verify(raw []byte, name string, now time.Time) (*Record, error) {
	return VerifyIn(raw, name, -1, now)
}

// VerifyIn is Verify for a record found in (or sent to) shard shard of the
// name's sets: after the name, it checks that the record belongs in that
// shard (ErrWrongShard), before the clock. A negative shard asks for none.
func VerifyIn(raw []byte, name string, shard int, now time.Time) (*Record, error) {
	r, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	if name != "" && r.Name != name {
		return nil, fmt.Errorf("%w: record for %q, want %q", ErrWrongName, r.Name, name)
	}
	if shard >= 0 && r.Shard() != shard {
		return nil, fmt.Errorf("%w: the record of %s with %d shards belongs in shard %d, not %d", ErrWrongShard, r.Peer, r.ShardCount(), r.Shard(), shard)
	}
	if err := r.Check(now); err != nil {
		return nil, err
	}
	return r, nil
}

// Reason maps a rejection error to a short stable label for metrics and
// for the conformance vectors: "too_large", "malformed", "non_canonical",
// "non_canonical_key", "small_order_key", "peer_mismatch",
// "non_canonical_signature", "bad_signature", "lifetime", "wrong_name",
// "wrong_shard", "wrong_node", "future", "expired", "delegation" (any fault of a record's
// delegation: see DelegationReason), "stale", "wrong_publisher", or
// "other".
func Reason(err error) string {
	if errors.Is(err, ErrDelegation) {
		return "delegation"
	}
	for _, c := range []struct {
		err   error
		label string
	}{
		{ErrTooLarge, "too_large"}, {ErrMalformed, "malformed"},
		{ErrNonCanonical, "non_canonical"}, {ErrNonCanonicalKey, "non_canonical_key"},
		{ErrSmallOrderKey, "small_order_key"}, {ErrPeerMismatch, "peer_mismatch"},
		{ErrNonCanonicalSignature, "non_canonical_signature"}, {ErrBadSignature, "bad_signature"},
		{ErrLifetime, "lifetime"}, {ErrWrongName, "wrong_name"}, {ErrWrongShard, "wrong_shard"}, {ErrWrongNode, "wrong_node"},
		{ErrFuture, "future"}, {ErrExpired, "expired"},
		{ErrStale, "stale"}, {ErrWrongPublisher, "wrong_publisher"},
	} {
		if errors.Is(err, c.err) {
			return c.label
		}
	}
	return "other"
}

// DelegationReason returns, for an error whose Reason is "delegation", the
// label of what is wrong with the delegation itself ("expired",
// "bad_signature", "wrong_node", ...), and "" for any other error.
func DelegationReason(err error) string {
	var de *DelegationError
	if !errors.As(err, &de) {
		return ""
	}
	return Reason(de.Err)
}
