package record

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Delegation rules. Like the record's, they are part of the format.
const (
	// MaxDelegationSize is the largest encoded delegation, in bytes.
	MaxDelegationSize = 512
	// MaxDelegationTTL is the longest allowed not-after minus issued-at.
	MaxDelegationTTL = 90 * 24 * time.Hour
)

// ErrDelegation is matched (errors.Is) by every error about a record's or a
// standalone delegation: a malformed or badly signed delegation, one for
// another cell or another node, one not yet valid or expired. Those errors
// are *DelegationError, whose Err says which (see DelegationReason).
var ErrDelegation = errors.New("dht: invalid delegation")

// ErrWrongNode: a delegation names another node key than the record's.
var ErrWrongNode = errors.New("dht: delegation for another node key")

// DelegationError is a fault of a delegation. Err wraps one of the sentinel
// errors a record's fault would (ErrMalformed, ErrExpired, ErrWrongName,
// ErrWrongNode, ...); errors.Is(err, ErrDelegation) holds for every
// DelegationError.
type DelegationError struct{ Err error }

func (e *DelegationError) Error() string { return "dht: invalid delegation: " + e.Err.Error() }

// Unwrap returns the fault.
func (e *DelegationError) Unwrap() error { return e.Err }

// Is reports target == ErrDelegation.
func (e *DelegationError) Is(target error) bool { return target == ErrDelegation }

func delegationErr(format string, a ...any) error {
	return &DelegationError{Err: fmt.Errorf(format, a...)}
}

// Delegation is a publisher key's statement that one node key may announce
// one cell until NotAfter. The cell's manifest lists its publisher keys; the
// publisher key signs a short-lived delegation for each node that runs the
// cell, so service nodes never hold the publisher key.
type Delegation struct {
	Name      string            // cell name, "org/name"
	Node      ed25519.PublicKey // the node key allowed to publish
	Publisher ed25519.PublicKey // the key that signed this delegation
	Issued    time.Time         // millisecond precision
	NotAfter  time.Time         // millisecond precision; at most Issued+90 days

	raw []byte
}

// Bytes returns the signed encoding, or nil if d was neither signed nor
// decoded.
func (d *Delegation) Bytes() []byte { return d.raw }

type delegationBody struct {
	Version   uint64 `cbor:"0,keyasint"`
	Name      string `cbor:"1,keyasint"`
	Node      []byte `cbor:"2,keyasint"`
	Publisher []byte `cbor:"3,keyasint"`
	Issued    uint64 `cbor:"4,keyasint"`
	NotAfter  uint64 `cbor:"5,keyasint"`
}

var delegationKeys = []uint64{0, 1, 2, 3, 4, 5}

// SignDelegation signs d with the publisher key priv and returns it with
// Publisher filled in and its bytes set. It checks every rule
// DecodeDelegation checks except the clock's.
func SignDelegation(priv ed25519.PrivateKey, d Delegation) (*Delegation, error) {
	d.Publisher = priv.Public().(ed25519.PublicKey)
	d.raw = nil
	b := delegationBody{Version: FormatVersion, Name: d.Name, Node: d.Node, Publisher: d.Publisher}
	var err error
	if b.Issued, err = unixMilli("issued", d.Issued); err != nil {
		return nil, &DelegationError{Err: err}
	}
	if b.NotAfter, err = unixMilli("not-after", d.NotAfter); err != nil {
		return nil, &DelegationError{Err: err}
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	if err := checkKey(b.Node); err != nil {
		return nil, delegationErr("node key: %w", err)
	}
	bb, err := encMode.Marshal(b)
	if err != nil {
		return nil, err
	}
	raw, err := encMode.Marshal(envelope{Body: bb, Sig: signDomain(priv, DelegationDomain, bb)})
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxDelegationSize {
		return nil, delegationErr("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxDelegationSize)
	}
	d.Issued, d.NotAfter = time.UnixMilli(int64(b.Issued)).UTC(), time.UnixMilli(int64(b.NotAfter)).UTC()
	d.raw = raw
	return &d, nil
}

// DecodeDelegation parses and verifies signed delegation bytes, in the
// order of docs/records.md: size, canonical encoding of envelope and body,
// field rules, both keys, and the publisher's signature. It does not look
// at a clock or at which record carries it: see CheckFor. Errors are
// *DelegationError.
func DecodeDelegation(raw []byte) (*Delegation, error) { return decodeDelegation(raw, nil) }

// decodeDelegation is DecodeDelegation for a delegation carried by a record
// whose key, verified, is verifiedKey: a node key equal to it needs no
// second curve check.
func decodeDelegation(raw, verifiedKey []byte) (*Delegation, error) {
	if len(raw) > MaxDelegationSize {
		return nil, delegationErr("%w: %d bytes, limit %d", ErrTooLarge, len(raw), MaxDelegationSize)
	}
	bodyBytes, sig, err := openEnvelope(raw)
	if err != nil {
		return nil, &DelegationError{Err: err}
	}
	v, err := decodeCBOR(bodyBytes)
	if err != nil {
		return nil, delegationErr("body: %w", err)
	}
	if err := canonicalCBOR(bodyBytes, v); err != nil {
		return nil, delegationErr("body: %w", err)
	}
	m := asMap("delegation body", v, delegationKeys, delegationKeys)
	b := delegationBody{Version: m.uint(0), Name: m.text(1, false), Node: m.bytes(2, false),
		Publisher: m.bytes(3, false), Issued: m.uint(4), NotAfter: m.uint(5)}
	if m.err != nil {
		return nil, &DelegationError{Err: m.err}
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	nodeCheck := checkKey
	if verifiedKey != nil && bytes.Equal(b.Node, verifiedKey) {
		nodeCheck = checkKeyBytes
	}
	if err := nodeCheck(b.Node); err != nil {
		return nil, delegationErr("node key: %w", err)
	}
	if err := checkKeyBytes(b.Publisher); err != nil {
		return nil, delegationErr("publisher key: %w", err)
	}
	if err := verifyBy(b.Publisher, func() error {
		return checkSignature(b.Publisher, SignedMessage(DelegationDomain, bodyBytes), sig)
	}); err != nil {
		return nil, delegationErr("%w (not signed by the publisher key it names)", err)
	}
	return &Delegation{Name: b.Name, Node: bytes.Clone(b.Node), Publisher: bytes.Clone(b.Publisher),
		Issued: time.UnixMilli(int64(b.Issued)).UTC(), NotAfter: time.UnixMilli(int64(b.NotAfter)).UTC(),
		raw: bytes.Clone(raw)}, nil
}

// check checks the delegation body's field rules in the documented order:
// ErrMalformed, then ErrLifetime last.
func (b *delegationBody) check() error {
	if b.Version != FormatVersion {
		return delegationErr("%w: version %d, want %d (version 1 is retired)", ErrMalformed, b.Version, FormatVersion)
	}
	if _, err := ParseName(b.Name); err != nil {
		return delegationErr("%w: %v", ErrMalformed, err)
	}
	switch {
	case len(b.Node) != ed25519.PublicKeySize || len(b.Publisher) != ed25519.PublicKeySize:
		return delegationErr("%w: keys must be %d bytes", ErrMalformed, ed25519.PublicKeySize)
	case b.Issued > MaxUnixMilli || b.NotAfter > MaxUnixMilli:
		return delegationErr("%w: time after %d ms (year 9999)", ErrMalformed, uint64(MaxUnixMilli))
	case b.NotAfter <= b.Issued:
		return delegationErr("%w: not-after at or before issued-at", ErrMalformed)
	case b.NotAfter-b.Issued > uint64(MaxDelegationTTL.Milliseconds()):
		return delegationErr("%w: %v, limit %v", ErrLifetime, time.Duration(b.NotAfter-b.Issued)*time.Millisecond, MaxDelegationTTL)
	}
	return nil
}

// VerifyDelegation decodes raw (DecodeDelegation), checks that it is for
// the cell name (unless name is "") and the node key node (unless node is
// nil), in that order, and that it is live at now. Errors are
// *DelegationError.
func VerifyDelegation(raw []byte, name string, node ed25519.PublicKey, now time.Time) (*Delegation, error) {
	d, err := DecodeDelegation(raw)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = d.Name
	}
	if node == nil {
		node = d.Node
	}
	if err := d.CheckFor(name, node, now); err != nil {
		return nil, err
	}
	return d, nil
}

// CheckFor reports whether d lets the node key node publish the cell name
// at now (with MaxSkew of tolerance either way).
func (d *Delegation) CheckFor(name string, node ed25519.PublicKey, now time.Time) error {
	if err := d.covers(name, node); err != nil {
		return err
	}
	return d.live(now)
}

// covers checks the cell name and node key, which do not depend on a clock.
func (d *Delegation) covers(name string, node ed25519.PublicKey) error {
	switch {
	case d.Name != name:
		return delegationErr("%w: it is for %s, not %s", ErrWrongName, d.Name, name)
	case !bytes.Equal(d.Node, node):
		return &DelegationError{Err: ErrWrongNode}
	}
	return nil
}

// live checks d's validity period at now.
func (d *Delegation) live(now time.Time) error {
	switch {
	case d.Issued.After(now.Add(MaxSkew)):
		return delegationErr("%w: delegation issued %v ahead of this clock", ErrFuture, d.Issued.Sub(now).Round(time.Millisecond))
	case now.After(d.NotAfter.Add(MaxSkew)):
		return delegationErr("%w: delegation expired %v ago", ErrExpired, now.Sub(d.NotAfter).Round(time.Millisecond))
	}
	return nil
}

// ParsePublicKey parses an ed25519 public key written as 64 hex digits or
// as 44 characters of standard padded base64, as Cell.json and the command
// line give them.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	var b []byte
	var err error
	switch len(s) {
	case 2 * ed25519.PublicKeySize:
		b, err = hex.DecodeString(s)
	case base64.StdEncoding.EncodedLen(ed25519.PublicKeySize):
		b, err = base64.StdEncoding.DecodeString(s)
	default:
		return nil, fmt.Errorf("dht: public key %q: want 64 hex digits or 44 base64 characters", s)
	}
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("dht: public key %q: not hex or base64 of 32 bytes", s)
	}
	return ed25519.PublicKey(b), nil
}
