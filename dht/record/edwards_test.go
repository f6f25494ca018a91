package record

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"math/big"
	"testing"
)

// A slow, plain implementation of edwards25519 (-x² + y² = 1 + d·x²·y²) in
// affine coordinates with math/big, for the tests only: it builds the keys
// and signatures that no Ed25519 library makes (small-order and mixed-order
// keys, degenerate signatures) and checks the package's own tables against
// the group law.

type edPoint struct{ x, y *big.Int }

var (
	bigOne  = big.NewInt(1)
	groupLn = leBig(groupL)
	edBase  = func() edPoint {
		y := new(big.Int).Mul(big.NewInt(4), new(big.Int).ModInverse(big.NewInt(5), fieldP))
		y.Mod(y, fieldP)
		p, ok := edDecode(edEncodeY(y, 0))
		if !ok {
			panic("base point")
		}
		return p
	}()
	edIdentity = edPoint{big.NewInt(0), big.NewInt(1)}
)

func fmod(v *big.Int) *big.Int { return v.Mod(v, fieldP) }

func edAdd(p, q edPoint) edPoint {
	x1y2 := new(big.Int).Mul(p.x, q.y)
	y1x2 := new(big.Int).Mul(p.y, q.x)
	y1y2 := new(big.Int).Mul(p.y, q.y)
	x1x2 := new(big.Int).Mul(p.x, q.x)
	t := fmod(new(big.Int).Mul(edD, fmod(new(big.Int).Mul(x1x2, y1y2))))
	x := new(big.Int).Add(x1y2, y1x2)
	x.Mul(x, new(big.Int).ModInverse(fmod(new(big.Int).Add(bigOne, t)), fieldP))
	y := new(big.Int).Add(y1y2, x1x2) // a = -1: y1y2 - a·x1x2
	y.Mul(y, new(big.Int).ModInverse(fmod(new(big.Int).Sub(bigOne, t)), fieldP))
	return edPoint{fmod(x), fmod(y)}
}

func edNeg(p edPoint) edPoint { return edPoint{fmod(new(big.Int).Neg(p.x)), new(big.Int).Set(p.y)} }

func edMul(k *big.Int, p edPoint) edPoint {
	out := edIdentity
	for i := k.BitLen() - 1; i >= 0; i-- {
		out = edAdd(out, out)
		if k.Bit(i) == 1 {
			out = edAdd(out, p)
		}
	}
	return out
}

func edEqual(p, q edPoint) bool { return p.x.Cmp(q.x) == 0 && p.y.Cmp(q.y) == 0 }

func edEncodeY(y *big.Int, sign uint) []byte {
	be := y.FillBytes(make([]byte, 32))
	out := make([]byte, 32)
	for i := range out {
		out[i] = be[31-i]
	}
	out[31] |= byte(sign << 7)
	return out
}

func edEncode(p edPoint) []byte { return edEncodeY(p.y, p.x.Bit(0)) }

// edDecode is RFC 8032 §5.1.3 decoding, strict (y < p, no x = 0 with the
// sign bit set).
func edDecode(b []byte) (edPoint, bool) {
	if len(b) != 32 {
		return edPoint{}, false
	}
	yb := bytes.Clone(b)
	sign := uint(yb[31] >> 7)
	yb[31] &= 0x7f
	y := leBig(yb)
	if y.Cmp(fieldP) >= 0 {
		return edPoint{}, false
	}
	u := fmod(new(big.Int).Sub(new(big.Int).Mul(y, y), bigOne))
	v := fmod(new(big.Int).Add(new(big.Int).Mul(edD, new(big.Int).Mul(y, y)), bigOne))
	x2 := fmod(new(big.Int).Mul(u, new(big.Int).ModInverse(v, fieldP)))
	x := new(big.Int).ModSqrt(x2, fieldP)
	if x == nil {
		return edPoint{}, false
	}
	if x.Sign() == 0 && sign == 1 {
		return edPoint{}, false
	}
	if x.Bit(0) != sign {
		x = fmod(new(big.Int).Neg(x))
	}
	return edPoint{x, y}, true
}

// secretScalar is the scalar a of an Ed25519 private key (RFC 8032 §5.1.5)
// and prefix the second half of the hashed seed.
func secretScalar(priv ed25519.PrivateKey) (a *big.Int, prefix []byte) {
	h := sha512.Sum512(priv.Seed())
	h[0] &= 248
	h[31] &= 127
	h[31] |= 64
	return leBig(h[:32]), h[32:]
}

// hramScalar is k = SHA-512(R || A || M) mod L.
func hramScalar(r, a, msg []byte) *big.Int {
	h := sha512.New()
	h.Write(r)
	h.Write(a)
	h.Write(msg)
	return new(big.Int).Mod(leBig(h.Sum(nil)), groupLn)
}

func leScalar(s *big.Int) []byte {
	be := new(big.Int).Mod(s, groupLn).FillBytes(make([]byte, 32))
	out := make([]byte, 32)
	for i := range out {
		out[i] = be[31-i]
	}
	return out
}

// torsionPoint is a point of order 8.
func torsionPoint() edPoint {
	p, ok := edDecode(smallOrderPoints[4])
	if !ok {
		panic("order-8 point")
	}
	return p
}

func TestEdwardsHelper(t *testing.T) {
	// The helper agrees with crypto/ed25519 on public keys.
	priv := testKey(7)
	a, _ := secretScalar(priv)
	if got := edEncode(edMul(a, edBase)); !bytes.Equal(got, priv.Public().(ed25519.PublicKey)) {
		t.Fatalf("helper's [a]B = %x, crypto/ed25519 says %x", got, priv.Public())
	}
	if !edEqual(edMul(groupLn, edBase), edIdentity) {
		t.Fatal("[L]B is not the identity")
	}
}

// TestSmallOrderPoints: the package's table holds exactly the 8 points of
// order dividing 8, each canonical, all distinct.
func TestSmallOrderPoints(t *testing.T) {
	seen := map[string]bool{}
	for _, enc := range smallOrderPoints {
		p, ok := edDecode(enc)
		if !ok {
			t.Fatalf("%x does not decode", enc)
		}
		if !bytes.Equal(edEncode(p), enc) {
			t.Fatalf("%x is not canonical", enc)
		}
		if !edEqual(edMul(big.NewInt(8), p), edIdentity) {
			t.Fatalf("%x: [8]P is not the identity", enc)
		}
		seen[string(enc)] = true
	}
	if len(seen) != 8 {
		t.Fatalf("%d distinct points, want 8", len(seen))
	}
	// They are the multiples of one order-8 point.
	t8 := torsionPoint()
	for i := range 8 {
		if !seen[string(edEncode(edMul(big.NewInt(int64(i)), t8)))] {
			t.Fatalf("[%d]T is not in the table", i)
		}
	}
}
