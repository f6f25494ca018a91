package dht

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
	// DelegationContext is the Ed25519ctx context of delegation signatures.
	DelegationContext = "cellnode/delegation/v1"
)

// ErrDelegation is wrapped by every delegation check that fails: a
// malformed or badly signed delegation, one for another cell or another
// node, one not yet valid or expired.
var ErrDelegation = errors.New("dht: invalid delegation")

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
	Issued    int64  `cbor:"4,keyasint"`
	NotAfter  int64  `cbor:"5,keyasint"`
}

// SignDelegation signs d with the publisher key priv and returns it with
// Publisher filled in and its bytes set.
func SignDelegation(priv ed25519.PrivateKey, d Delegation) (*Delegation, error) {
	d.Publisher = priv.Public().(ed25519.PublicKey)
	d.raw = nil
	if err := d.checkStatic(); err != nil {
		return nil, err
	}
	bb, err := encMode.Marshal(delegationBody{Version: FormatVersion, Name: d.Name, Node: d.Node,
		Publisher: d.Publisher, Issued: d.Issued.UnixMilli(), NotAfter: d.NotAfter.UnixMilli()})
	if err != nil {
		return nil, err
	}
	sig, err := priv.Sign(nil, bb, &ed25519.Options{Context: DelegationContext})
	if err != nil {
		return nil, err
	}
	raw, err := encMode.Marshal(envelope{Body: bb, Sig: sig})
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxDelegationSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrDelegation, len(raw), MaxDelegationSize)
	}
	d.Issued, d.NotAfter = time.UnixMilli(d.Issued.UnixMilli()).UTC(), time.UnixMilli(d.NotAfter.UnixMilli()).UTC()
	d.raw = raw
	return &d, nil
}

// DecodeDelegation parses and verifies signed delegation bytes: size,
// canonical encoding, static rules and the publisher's signature. It does
// not look at a clock or at which record carries it: see CheckFor. Errors
// wrap ErrDelegation.
func DecodeDelegation(raw []byte) (*Delegation, error) {
	if len(raw) > MaxDelegationSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrDelegation, len(raw), MaxDelegationSize)
	}
	var env envelope
	if err := decMode.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: malformed: %v", ErrDelegation, err)
	}
	var b delegationBody
	if err := decMode.Unmarshal(env.Body, &b); err != nil {
		return nil, fmt.Errorf("%w: malformed body: %v", ErrDelegation, err)
	}
	if canonical(raw, env) != nil || canonical(env.Body, b) != nil {
		return nil, fmt.Errorf("%w: not in canonical encoding", ErrDelegation)
	}
	if b.Version != FormatVersion {
		return nil, fmt.Errorf("%w: version %d", ErrDelegation, b.Version)
	}
	d := &Delegation{Name: b.Name, Node: b.Node, Publisher: b.Publisher,
		Issued: time.UnixMilli(b.Issued).UTC(), NotAfter: time.UnixMilli(b.NotAfter).UTC()}
	if err := d.checkStatic(); err != nil {
		return nil, err
	}
	if len(env.Sig) != ed25519.SignatureSize ||
		ed25519.VerifyWithOptions(d.Publisher, env.Body, env.Sig, &ed25519.Options{Context: DelegationContext}) != nil {
		return nil, fmt.Errorf("%w: bad signature (not signed by the publisher key it names)", ErrDelegation)
	}
	d.raw = bytes.Clone(raw)
	return d, nil
}

func (d *Delegation) checkStatic() error {
	if _, err := ParseName(d.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrDelegation, err)
	}
	if len(d.Node) != ed25519.PublicKeySize || len(d.Publisher) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: keys must be %d bytes", ErrDelegation, ed25519.PublicKeySize)
	}
	ttl := d.NotAfter.Sub(d.Issued)
	if ttl <= 0 || ttl > MaxDelegationTTL {
		return fmt.Errorf("%w: lifetime %v (0 to %v allowed)", ErrDelegation, ttl, MaxDelegationTTL)
	}
	return nil
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
		return fmt.Errorf("%w: it is for %s, not %s", ErrDelegation, d.Name, name)
	case !bytes.Equal(d.Node, node):
		return fmt.Errorf("%w: it is for another node key", ErrDelegation)
	}
	return nil
}

// live checks d's validity period at now.
func (d *Delegation) live(now time.Time) error {
	switch {
	case d.Issued.After(now.Add(MaxSkew)):
		return fmt.Errorf("%w: issued %v in the future", ErrDelegation, d.Issued.Sub(now).Round(time.Second))
	case now.After(d.NotAfter.Add(MaxSkew)):
		return fmt.Errorf("%w: expired %v ago", ErrDelegation, now.Sub(d.NotAfter).Round(time.Second))
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
