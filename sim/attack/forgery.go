package attack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/cellnode/cellnode/internal/wire"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// attackName is the attacked cell.
const attackName = "acme/exchange"

// forgery runs AttackForgery.
func (a *arena) forgery(ctx context.Context, rep *AttackReport) error {
	k := a.as.Network.BucketSize
	c, err := a.startCell(ctx, attackName, a.key("publisher"), a.pick(a.as.Instances))
	if err != nil {
		return err
	}
	adv, err := a.adversary(a.key("adversary-host"))
	if err != nil {
		return err
	}
	targets := a.honestIDs()

	// A live record of a real instance, read from the storers as anyone can.
	var real *record.Record
	for _, raw := range getAll(ctx, adv, closest(record.Key(attackName), targets, k), attackName, nil) {
		if r, err := record.Verify(raw, attackName, time.Now()); err == nil && c.live()[r.Peer] && r.Delegation != nil {
			real = r
			break
		}
	}
	if real == nil {
		return fmt.Errorf("%w: no real record at the storers", errAttack)
	}
	realBody, realEnv, err := openBody(real.Bytes())
	if err != nil {
		return err
	}

	// The adversary's keys: a node key (which the real publisher once
	// delegated for another cell, and for this one until yesterday), a
	// publisher key of its own, and node keys for valid records.
	evil, evilPub, evilOpen, evilDelegated := a.key("adversary-node"), a.key("adversary-publisher"), a.key("adversary-open"), a.key("adversary-delegated")
	evilKey := evil.Public().(ed25519.PublicKey)
	now := time.Now()
	seq := uint64(now.UnixMicro())
	endpoint := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", i+1) } // refused at once when probed
	forgedEndpoints := map[string]bool{}

	otherName, err := delegate(c.pubPriv, "acme/other", evilKey, now)
	if err != nil {
		return err
	}
	expired, err := record.SignDelegation(c.pubPriv, record.Delegation{Name: attackName, Node: evilKey, Issued: now.Add(-8 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	if err != nil {
		return err
	}
	notSignedByNamed := sealDelegation(wireDelegation{Version: record.FormatVersion, Name: attackName, Node: evilKey, Publisher: c.pub,
		Issued: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(24 * time.Hour).UnixMilli()}, evilPub)
	ownDelegation, err := delegate(evilPub, attackName, evilDelegated.Public().(ed25519.PublicKey), now)
	if err != nil {
		return err
	}

	// evilBody is a record body by the adversary's node key, with edit
	// applied, signed by that key.
	n := 0
	evilRecord := func(edit func(*wireBody)) []byte {
		n++
		b := recordBody(evil, attackName, seq+uint64(n), now, endpoint(n))
		forgedEndpoints[endpoint(n)] = true
		if edit != nil {
			edit(&b)
		}
		return sealBody(b, evil, nil)
	}
	// realEdit is the real record with edit applied, signed by signer (nil
	// keeps the real signature).
	realEdit := func(signer ed25519.PrivateKey, edit func(*wireBody)) []byte {
		n++
		b := realBody
		b.Endpoints = []string{endpoint(n)}
		forgedEndpoints[endpoint(n)] = true
		b.Seq = realBody.Seq + 1_000_000
		edit(&b)
		return sealBody(b, signer, realEnv.Sig)
	}
	valid := func(priv ed25519.PrivateKey, d *record.Delegation) []byte {
		n++
		r, err := signRecord(priv, attackName, seq, now, endpoint(n), d)
		if err != nil {
			panic(err)
		}
		return r.Bytes()
	}
	// weak is a record of the cell by a key anyone can sign for, with a
	// signature made without any secret.
	weak := func(key []byte) []byte {
		n++
		forgedEndpoints[endpoint(n)] = true
		b := wireBody{Version: record.FormatVersion, Name: attackName, Peer: append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, key...),
			Key: key, Endpoints: []string{endpoint(n)}, Issued: now.UnixMilli(), Expires: now.Add(record.MaxLifetime).UnixMilli()}
		raw, err := forgeWeakKey(b, seq+uint64(n))
		if err != nil {
			panic(err)
		}
		return raw
	}
	otherNameRecord, err := signRecord(evil, "acme/other", seq, now, endpoint(0), otherName)
	if err != nil {
		return err
	}

	type forgeryCase struct {
		label string
		raw   []byte
		valid bool // a valid record of another key: the name's set takes it
	}
	cases := []forgeryCase{
		{"bad signature (real record, endpoint changed)", realEdit(nil, func(*wireBody) {}), false},
		{"forged withdrawal of a real instance", realEdit(nil, func(b *wireBody) { b.Withdrawn, b.Endpoints = true, []string{} }), false},
		{"real node's key, signed by another key", realEdit(evil, func(*wireBody) {}), false},
		{"real node's peer ID on the adversary's key", evilRecord(func(b *wireBody) { b.Peer = []byte(real.Peer) }), false},
		{"delegation for another name", evilRecord(func(b *wireBody) { b.Delegate = otherName.Bytes() }), false},
		{"delegation for another node (copied)", evilRecord(func(b *wireBody) { b.Delegate = real.Delegation.Bytes() }), false},
		{"expired delegation", evilRecord(func(b *wireBody) { b.Delegate = expired.Bytes() }), false},
		{"delegation not signed by the key it names", evilRecord(func(b *wireBody) { b.Delegate = notSignedByNamed }), false},
		{"valid record of another name", otherNameRecord.Bytes(), false},
		{"lifetime of a year", evilRecord(func(b *wireBody) { b.Expires = now.Add(365 * 24 * time.Hour).UnixMilli() }), false},
		{"issued 1 h in the future", evilRecord(func(b *wireBody) {
			b.Issued, b.Expires = now.Add(time.Hour).UnixMilli(), now.Add(time.Hour+time.Minute).UnixMilli()
		}), false},
		{"non-canonical copy of a real record", reorderEnvelope(real.Bytes()), false},
		// Keys for which plain Ed25519 (crypto/ed25519.Verify) accepts a
		// signature made without any secret: R = B - [j]A, S = 1.
		{"real record, signature S + L", malleate(real.Bytes()), false},
		{"small-order key: identity", weak(weakKeys[0]), false},
		{"small-order key: order 2", weak(weakKeys[1]), false},
		{"small-order key: order 4", weak(weakKeys[2]), false},
		{"small-order key: order 8", weak(weakKeys[4]), false},
		{"non-canonical key: y = p + 1", weak(identityYP1), false},
		{"non-canonical key: x = 0, sign 1", weak(identitySigned), false},
		{"oversized (5 KiB)", make([]byte, 5<<10), false},
		{"valid open record, adversary's key", valid(evilOpen, nil), true},
		{"valid, delegated by adversary's publisher", valid(evilDelegated, ownDelegation), true},
	}
	honest := a.honestNodes()
	for _, fc := range cases {
		before := counters(honest)
		var toName, toPub putResult
		putAll(ctx, adv, targets, attackName, nil, fc.raw, &toName)
		putAll(ctx, adv, targets, attackName, c.pub, fc.raw, &toPub)
		row := AttackRow{Case: fc.label, Attempts: toName.sent + toPub.sent, Refused: toName.fail + toPub.fail,
			Stored: toName.ok + toPub.ok, Reasons: rejections(before, counters(honest))}
		row.Through = toPub.ok // nothing but the real publisher's records enters its set
		if !fc.valid {
			row.Through += toName.ok
		} else {
			row.Note = "name's set takes it by design (open cells)"
		}
		if n := toName.transportErrors + toPub.transportErrors; n > 0 {
			row.Note = fmt.Sprintf("%d streams reset by the storer", n)
		}
		rep.Rows = append(rep.Rows, row)
	}

	// What finders make of it. The adversary's valid records are live at
	// the storers of the name's set.
	want := c.live()
	adversaryPeers := map[peer.ID]bool{
		mustPeerID(evilOpen.Public().(ed25519.PublicKey)):      true,
		mustPeerID(evilDelegated.Public().(ed25519.PublicKey)): true,
	}
	judge := func(row *AttackRow, outs []findOutcome, pinned bool) {
		for _, o := range outs {
			if o.res == nil {
				continue
			}
			for _, in := range o.res.Instances {
				id, _ := peer.Decode(in.Peer)
				forged := slices.ContainsFunc(in.Endpoints, func(e string) bool { return forgedEndpoints[e] }) && !adversaryPeers[id]
				switch {
				case forged: // a forgery reached a finder
					row.Through++
				case pinned && !want[id]: // an untrusted instance shown to a pinned finder
					row.Through++
				case !pinned && !want[id] && !adversaryPeers[id]:
					row.Through++
				}
			}
		}
	}
	pinned := AttackRow{Case: "finds pinning the real publisher"}
	judge(&pinned, a.findRow(ctx, &pinned, attackName, []ed25519.PublicKey{c.pub}, want, a.as.Finds), true)
	rep.Rows = append(rep.Rows, pinned)
	open := AttackRow{Case: "finds pinning nothing"}
	outs := a.findRow(ctx, &open, attackName, nil, want, a.as.Finds)
	judge(&open, outs, false)
	open.Note = "shown: the adversary's valid records, listed as unverified"
	open.FindsOK = 0
	for _, o := range outs {
		if o.err == nil && o.lost == 0 && o.shown == len(adversaryPeers) {
			open.FindsOK++ // every real instance, plus exactly the valid foreign ones
		}
	}
	rep.Rows = append(rep.Rows, open)
	return nil
}

// reorderEnvelope re-encodes record bytes with the envelope's two keys in
// the wrong order: the same body and signature, not canonical CBOR.
func reorderEnvelope(raw []byte) []byte {
	_, env, err := openBody(raw)
	if err != nil {
		panic(err)
	}
	out := []byte{0xa2, 0x02}
	out = append(out, cborBytes(env.Sig)...)
	out = append(out, 0x01)
	return append(out, cborBytes(env.Body)...)
}

// cborBytes encodes b as a CBOR byte string.
func cborBytes(b []byte) []byte {
	switch n := len(b); {
	case n < 24:
		return append([]byte{0x40 | byte(n)}, b...)
	case n < 256:
		return append([]byte{0x58, byte(n)}, b...)
	default:
		return append([]byte{0x59, byte(n >> 8), byte(n)}, b...)
	}
}

// malleate returns raw with its signature's S replaced by S + L: the same
// signature to a verifier that reduces S, not a canonical one.
func malleate(raw []byte) []byte {
	_, env, err := openBody(raw)
	if err != nil {
		panic(err)
	}
	s := new(big.Int).Add(leInt(env.Sig[32:]), edL)
	sig := append(bytes.Clone(env.Sig[:32]), leBytes(s)...)
	out, err := wire.Enc.Marshal(wireEnvelope{Body: env.Body, Sig: sig})
	if err != nil {
		panic(err)
	}
	return out
}

// Keys for which anyone can make signatures that plain Ed25519 accepts: the
// eight points of small order (identity, order 2, two of order 4, four of
// order 8) and two non-canonical encodings of the identity.
var (
	weakKeys = func() [][]byte {
		var out [][]byte
		for _, h := range []string{
			"0100000000000000000000000000000000000000000000000000000000000000",
			"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
			"0000000000000000000000000000000000000000000000000000000000000000",
			"0000000000000000000000000000000000000000000000000000000000000080",
			"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
			"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
			"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
			"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
		} {
			b, _ := hex.DecodeString(h)
			out = append(out, b)
		}
		return out
	}()
	identityYP1    = append(append([]byte{0xee}, bytes.Repeat([]byte{0xff}, 30)...), 0x7f) // y = p + 1 ≡ 1
	identitySigned = append(append([]byte{0x01}, make([]byte, 30)...), 0x80)
)

// forgeWeakKey signs the record body b (its key one of the weak keys)
// without any secret: with A of order h and S = 1, R = B - [j]A verifies
// whenever k = H(R || A || M) ≡ j (mod h), which trying a few sequence
// numbers from seq on finds. It checks that crypto/ed25519.Verify accepts
// the result: only the format's own key checks stand in the way.
func forgeWeakKey(b wireBody, seq uint64) ([]byte, error) {
	a := edDecodeLoose(b.Key)
	h := 1
	for p := a; !p.isIdentity(); p = p.add(a) {
		h++
	}
	for i := range uint64(256) {
		b.Seq = seq + i
		body, err := wire.Enc.Marshal(b)
		if err != nil {
			return nil, err
		}
		msg := record.SignedMessage(record.RecordDomain, body)
		ja := edIdentity()
		for j := range h {
			r := edBasePoint().add(ja.neg()).encode()
			hh := sha512.New()
			hh.Write(r)
			hh.Write(b.Key)
			hh.Write(msg)
			k := new(big.Int).Mod(leInt(hh.Sum(nil)), edL)
			if new(big.Int).Mod(k, big.NewInt(int64(h))).Int64() == int64(j) {
				sig := append(r, leBytes(big.NewInt(1))...)
				if !ed25519.Verify(b.Key, msg, sig) {
					return nil, fmt.Errorf("sim: forged signature for key %x does not verify", b.Key)
				}
				return wire.Enc.Marshal(wireEnvelope{Body: body, Sig: sig})
			}
			ja = ja.add(a)
		}
	}
	return nil, fmt.Errorf("sim: no forgery found for key %x", b.Key)
}

// A few lines of edwards25519 arithmetic (affine, math/big) for the
// forger; speed does not matter.
type edPt struct{ x, y *big.Int }

var (
	edP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	edL = func() *big.Int {
		l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
		return l
	}()
	edDc = func() *big.Int {
		d := new(big.Int).Mul(big.NewInt(-121665), new(big.Int).ModInverse(big.NewInt(121666), edP))
		return d.Mod(d, edP)
	}()
)

func edIdentity() edPt { return edPt{big.NewInt(0), big.NewInt(1)} }

func edBasePoint() edPt {
	b, _ := hex.DecodeString("5866666666666666666666666666666666666666666666666666666666666666")
	return edDecodeLoose(b)
}

func (p edPt) isIdentity() bool { return p.x.Sign() == 0 && p.y.Cmp(big.NewInt(1)) == 0 }

func (p edPt) neg() edPt {
	x := new(big.Int).Neg(p.x)
	return edPt{x.Mod(x, edP), p.y}
}

func (p edPt) add(q edPt) edPt {
	mod := func(v *big.Int) *big.Int { return v.Mod(v, edP) }
	t := mod(new(big.Int).Mul(edDc, mod(new(big.Int).Mul(mod(new(big.Int).Mul(p.x, q.x)), mod(new(big.Int).Mul(p.y, q.y))))))
	x := new(big.Int).Add(new(big.Int).Mul(p.x, q.y), new(big.Int).Mul(p.y, q.x))
	x.Mul(x, new(big.Int).ModInverse(mod(new(big.Int).Add(big.NewInt(1), t)), edP))
	y := new(big.Int).Add(new(big.Int).Mul(p.y, q.y), new(big.Int).Mul(p.x, q.x))
	y.Mul(y, new(big.Int).ModInverse(mod(new(big.Int).Sub(big.NewInt(1), t)), edP))
	return edPt{mod(x), mod(y)}
}

func (p edPt) encode() []byte {
	out := leBytes(p.y)
	out[31] |= byte(p.x.Bit(0) << 7)
	return out
}

// edDecodeLoose decodes as crypto/ed25519 does: y reduced mod p, and x = 0
// whatever the sign bit. It panics on a y with no point.
func edDecodeLoose(enc []byte) edPt {
	yb := bytes.Clone(enc)
	sign := uint(yb[31] >> 7)
	yb[31] &= 0x7f
	y := new(big.Int).Mod(leInt(yb), edP)
	y2 := new(big.Int).Mul(y, y)
	u := new(big.Int).Sub(y2, big.NewInt(1))
	v := new(big.Int).Add(new(big.Int).Mul(edDc, y2), big.NewInt(1))
	x2 := new(big.Int).Mul(u, new(big.Int).ModInverse(v.Mod(v, edP), edP))
	x := new(big.Int).ModSqrt(x2.Mod(x2, edP), edP)
	if x == nil {
		panic(fmt.Sprintf("sim: %x is not a point", enc))
	}
	if x.Bit(0) != sign {
		x.Sub(edP, x).Mod(x, edP)
	}
	return edPt{x, y}
}

func leInt(b []byte) *big.Int {
	be := slices.Clone(b)
	slices.Reverse(be)
	return new(big.Int).SetBytes(be)
}

func leBytes(v *big.Int) []byte {
	out := new(big.Int).Mod(v, new(big.Int).Lsh(big.NewInt(1), 256)).FillBytes(make([]byte, 32))
	slices.Reverse(out)
	return out
}
