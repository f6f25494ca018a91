package sim

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/cellnode/cellnode/dht"
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
	var real *dht.Record
	for _, raw := range getAll(ctx, adv, closest(dht.Key(attackName), targets, k), attackName, nil) {
		if r, err := dht.Verify(raw, attackName, time.Now()); err == nil && c.live()[r.Peer] && r.Delegation != nil {
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
	expired, err := dht.SignDelegation(c.pubPriv, dht.Delegation{Name: attackName, Node: evilKey, Issued: now.Add(-8 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	if err != nil {
		return err
	}
	notSignedByNamed := sealDelegation(wireDelegation{Version: dht.FormatVersion, Name: attackName, Node: evilKey, Publisher: c.pub,
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
	valid := func(priv ed25519.PrivateKey, d *dht.Delegation) []byte {
		n++
		r, err := signRecord(priv, attackName, seq, now, endpoint(n), d)
		if err != nil {
			panic(err)
		}
		return r.Bytes()
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
