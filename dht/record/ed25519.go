package record

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"
)

// Domains of the signatures of format 2. A signature is plain Ed25519
// (RFC 8032 §5.1, no context) over SignedMessage(domain, body), so every
// Ed25519 library verifies it, and a signature made for one domain never
// verifies for another, nor as any other message libp2p signs with the same
// key (see docs/records.md, "Signatures").
const (
	RecordDomain     = "cellnode/instance/v2"
	DelegationDomain = "cellnode/delegation/v2"
)

// SignedMessage returns the bytes that Ed25519 signs for body in domain:
// one byte holding the length of domain, the domain's bytes, then the body.
// domain must be at most 127 bytes (so the length byte is also its
// unsigned-varint encoding).
func SignedMessage(domain string, body []byte) []byte {
	if len(domain) > 127 {
		panic("dht: signature domain over 127 bytes")
	}
	msg := make([]byte, 0, 1+len(domain)+len(body))
	msg = append(msg, byte(len(domain)))
	msg = append(msg, domain...)
	return append(msg, body...)
}

func signDomain(priv ed25519.PrivateKey, domain string, body []byte) []byte {
	return ed25519.Sign(priv, SignedMessage(domain, body))
}

// The eight points of small order (dividing 8) of edwards25519, in their
// canonical encodings. A key or an R among them is refused.
var smallOrderPoints = func() [][]byte {
	var out [][]byte
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000000", // identity
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
		"0000000000000000000000000000000000000000000000000000000000000000", // order 4
		"0000000000000000000000000000000000000000000000000000000000000080", // order 4
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	} {
		b, _ := hex.DecodeString(h)
		out = append(out, b)
	}
	return out
}()

func isSmallOrder(enc []byte) bool {
	for _, p := range smallOrderPoints {
		if bytes.Equal(enc, p) {
			return true
		}
	}
	return false
}

var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	// edD is the curve constant d = -121665/121666 mod p.
	edD = func() *big.Int {
		inv := new(big.Int).ModInverse(big.NewInt(121666), fieldP)
		d := new(big.Int).Mul(big.NewInt(-121665), inv)
		return d.Mod(d, fieldP)
	}()
	// groupL is the order of the prime-order subgroup, little-endian.
	groupL = []byte{
		0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
	}
)

// leBig reads b as a little-endian unsigned integer.
func leBig(b []byte) *big.Int {
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	return new(big.Int).SetBytes(be)
}

// checkKey reports ErrNonCanonicalKey unless pub is the canonical encoding
// of a point of edwards25519 (y < p; x = 0 only with the sign bit clear; a
// point with that y exists), and ErrSmallOrderKey if that point has small
// order. Such keys are refused: a small-order key "verifies" signatures
// anyone can make.
func checkKey(pub []byte) error {
	if err := checkKeyBytes(pub); err != nil {
		return err
	}
	return checkOnCurve(pub)
}

// checkKeyBytes is checkKey without the costly test that a point with that
// y exists, which a successful signature verification implies (verifying
// decodes the key): verify first, and call checkOnCurve only on failure, to
// report the key rather than the signature.
func checkKeyBytes(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes", ErrNonCanonicalKey, len(pub))
	}
	// y < p: p is ed ff … ff 7f little-endian.
	top := pub[31] & 0x7f
	if top == 0x7f && pub[0] >= 0xed && allFF(pub[1:31]) {
		return fmt.Errorf("%w: y is not below 2^255-19", ErrNonCanonicalKey)
	}
	// x = 0 exactly when y = 1 or y = p - 1 (ec ff … ff 7f).
	if pub[31]&0x80 != 0 {
		yOne := pub[0] == 1 && allZero(pub[1:31]) && top == 0
		yMinusOne := pub[0] == 0xec && allFF(pub[1:31]) && top == 0x7f
		if yOne || yMinusOne {
			return fmt.Errorf("%w: x is 0 but the sign bit is set", ErrNonCanonicalKey)
		}
	}
	if isSmallOrder(pub) {
		return ErrSmallOrderKey
	}
	return nil
}

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkOnCurve reports ErrNonCanonicalKey unless a point of the curve has
// the y of pub (which checkKeyBytes accepted).
func checkOnCurve(pub []byte) error {
	yb := bytes.Clone(pub)
	yb[31] &= 0x7f
	y := leBig(yb)
	// x² = u/v with u = y² - 1, v = d·y² + 1 (never 0 mod p); x exists iff
	// u/v, or equivalently u·v = (u/v)·v², is a square mod p.
	y2 := new(big.Int).Mul(y, y)
	u := new(big.Int).Sub(y2, big.NewInt(1))
	u.Mod(u, fieldP)
	v := new(big.Int).Mul(edD, y2)
	v.Add(v, big.NewInt(1))
	uv := v.Mul(v, u).Mod(v, fieldP)
	if u.Sign() != 0 && big.Jacobi(uv, fieldP) != 1 {
		return fmt.Errorf("%w: not a point of the curve", ErrNonCanonicalKey)
	}
	return nil
}

// verifyBy runs the checks that follow the key's (then, the peer ID's and
// the signature's), reporting a key that is no curve point in place of
// their failure, so that the result is that of checking the key fully
// first.
func verifyBy(pub []byte, then func() error) error {
	if err := then(); err != nil {
		if kerr := checkOnCurve(pub); kerr != nil {
			return kerr
		}
		return err
	}
	return nil
}

// checkSignature verifies sig over msg by pub, a key checkKey accepted:
// ErrNonCanonicalSignature when S is not below the group order L,
// ErrBadSignature when R is a small-order point or the cofactorless
// equation [S]B = R + [k]A does not hold (which crypto/ed25519 checks, as
// RFC 8032 and libsodium do).
func checkSignature(pub, msg, sig []byte) error {
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature of %d bytes", ErrMalformed, len(sig))
	}
	if !scalarBelowL(sig[32:]) {
		return ErrNonCanonicalSignature
	}
	if isSmallOrder(sig[:32]) || !ed25519.Verify(pub, msg, sig) {
		return ErrBadSignature
	}
	return nil
}

// scalarBelowL reports whether the little-endian 32-byte s is below L.
func scalarBelowL(s []byte) bool {
	for i := 31; i >= 0; i-- {
		switch {
		case s[i] < groupL[i]:
			return true
		case s[i] > groupL[i]:
			return false
		}
	}
	return false // s == L
}
