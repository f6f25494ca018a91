package dht

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
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes", ErrNonCanonicalKey, len(pub))
	}
	yb := bytes.Clone(pub)
	sign := yb[31] >> 7
	yb[31] &= 0x7f
	y := leBig(yb)
	if y.Cmp(fieldP) >= 0 {
		return fmt.Errorf("%w: y is not below 2^255-19", ErrNonCanonicalKey)
	}
	// x² = (y² - 1) / (d·y² + 1); x exists iff that is a square mod p.
	y2 := new(big.Int).Mul(y, y)
	u := new(big.Int).Sub(y2, big.NewInt(1))
	u.Mod(u, fieldP)
	v := new(big.Int).Mul(edD, y2)
	v.Add(v, big.NewInt(1)).Mod(v, fieldP)
	x2 := new(big.Int).Mul(u, new(big.Int).ModInverse(v, fieldP))
	x2.Mod(x2, fieldP)
	switch {
	case x2.Sign() == 0 && sign == 1:
		return fmt.Errorf("%w: x is 0 but the sign bit is set", ErrNonCanonicalKey)
	case x2.Sign() != 0 && big.Jacobi(x2, fieldP) != 1:
		return fmt.Errorf("%w: not a point of the curve", ErrNonCanonicalKey)
	}
	if isSmallOrder(pub) {
		return ErrSmallOrderKey
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
