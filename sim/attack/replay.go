package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cellnode/cellnode/internal/poll"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// replay runs AttackReplay.
func (a *arena) replay(ctx context.Context, rep *AttackReport) error {
	k := a.as.Network.BucketSize
	nodes := a.pick(a.as.Instances)
	c, err := a.startCell(ctx, attackName, a.key("publisher"), nodes)
	if err != nil {
		return err
	}
	adv, err := a.adversary(a.key("adversary-host"))
	if err != nil {
		return err
	}
	targets := a.honestIDs()
	nameStorers := closest(record.Key(attackName), targets, k)
	pubStorers := closest(dht.PublisherKey(attackName, c.pub), targets, k)

	// Capture: read the sets, as anyone may, while the real instances
	// republish, until each instance has been seen in 3 versions.
	captured := map[peer.ID]map[uint64]*record.Record{}
	capture := func() {
		raws := getAll(ctx, adv, nameStorers, attackName, nil)
		raws = append(raws, getAll(ctx, adv, pubStorers, attackName, c.pub)...)
		for _, raw := range raws {
			r, err := record.Verify(raw, attackName, time.Now())
			if err != nil {
				continue
			}
			if captured[r.Peer] == nil {
				captured[r.Peer] = map[uint64]*record.Record{}
			}
			captured[r.Peer][r.Seq] = r
		}
	}
	err = poll.Until(ctx, 100*time.Millisecond, func() bool {
		capture()
		for p := range c.live() {
			if len(captured[p]) < 3 {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: capture: %v", errAttack, err)
	}

	// held returns the sequence number node i holds for p in the set of
	// pub (nil: the name's set), 0 for none.
	held := func(i int, pub ed25519.PublicKey, p peer.ID) uint64 {
		for _, r := range a.nw.Node(i).DHT().Store().GetFor(attackName, pub) {
			if r.Peer == p {
				return r.Seq
			}
		}
		return 0
	}
	honest := a.honestNodes()
	// send PUTs raw to every node into both sets and fills row. A PUT that
	// a node takes while holding a newer record of the peer, or any PUT
	// taken when mustRefuse, got through.
	send := func(row *AttackRow, r *record.Record, mustRefuse bool) {
		for _, i := range a.honest() {
			for _, pub := range []ed25519.PublicKey{nil, c.pub} {
				h := held(i, pub, r.Peer)
				var res putResult
				putAll(ctx, adv, []peer.ID{a.nw.Node(i).ID()}, attackName, pub, r.Bytes(), &res)
				row.Attempts += res.sent
				row.Refused += res.fail
				if res.ok > 0 {
					row.Stored += res.ok
					if mustRefuse || h > r.Seq {
						row.Through += res.ok
					}
				}
			}
		}
	}

	// Censorship by planting: the adversary puts the newest record it
	// captured of the first instance into both sets at every node (the
	// storers, which hold newer ones, refuse it; every other node takes
	// it). Then a new instance starts. A find that stops on the first
	// agreeing answers, if they come from planted nodes, sees the first
	// instance only.
	first := c.ins[0]
	var plant *record.Record
	for _, r := range captured[first.Peer] {
		if plant == nil || r.Seq > plant.Seq {
			plant = r
		}
	}
	planted := AttackRow{Case: "plant 1 captured record at every node"}
	send(&planted, plant, false)
	planted.Note = "then the instances republish and a new one starts"
	if err := c.waitRepublished(ctx, 1); err != nil {
		return err
	}
	late, err := a.startCell(ctx, attackName, c.pubPriv, a.pick(1, nodes...))
	if err != nil {
		return err
	}
	afterPlant := AttackRow{Case: "  finds pinning the publisher, after planting"}
	outs := a.findRow(ctx, &afterPlant, attackName, []ed25519.PublicKey{c.pub}, mapsUnion(c.live(), late.live()), a.as.Finds)
	for _, o := range outs {
		if o.res == nil {
			continue
		}
		for _, in := range o.res.Instances {
			if id, _ := peer.Decode(in.Peer); id == first.Peer && in.Seq < plant.Seq {
				afterPlant.Through++
			}
		}
	}
	afterPlant.Note = "lost: instances hidden by finds that stopped on planted answers"
	rep.Rows = append(rep.Rows, planted, afterPlant)
	c.ins = append(c.ins, late.ins...)

	// One instance withdraws; the adversary keeps its last live records.
	gone := c.ins[len(c.ins)-2] // not the first, not the late one
	gone.StopService()
	if err := poll.Until(ctx, 10*time.Millisecond, func() bool { return !gone.Announcer.Status().Announcing }); err != nil {
		return fmt.Errorf("%w: withdrawal: %v", errAttack, err)
	}
	capture() // the withdrawal too, which is newer than every live record

	newest := map[peer.ID]uint64{}
	for p, vs := range captured {
		for s := range vs {
			newest[p] = max(newest[p], s)
		}
	}
	stale := AttackRow{Case: "older records (captured, still live)"}
	resurrect := AttackRow{Case: "withdrawn instance's last live records"}
	before := counters(honest)
	for p, vs := range captured {
		for _, s := range slices.Sorted(maps.Keys(vs)) {
			if s >= newest[p] || vs[s].Withdrawn {
				continue
			}
			if p == gone.Peer {
				send(&resurrect, vs[s], false)
			} else {
				send(&stale, vs[s], false)
			}
		}
	}
	after := counters(honest)
	stale.Reasons = rejections(before, after)
	stale.Note = "stored: only at nodes that held nothing of the peer (not its storers)"
	resurrect.Note = stale.Note

	// Expired records the real nodes signed: two minutes ago (a lower
	// sequence number), and two minutes ago with a sequence number above
	// the live one (a clock that was once ahead).
	expired := AttackRow{Case: "expired (real node, signed 2 min ago)"}
	expiredHigh := AttackRow{Case: "expired, seq above the live record's"}
	before = counters(honest)
	for j, i := range nodes[:len(nodes)-1] {
		priv := a.nw.Key(i)
		var deleg *record.Delegation
		for _, r := range captured[c.ins[j].Peer] {
			deleg = r.Delegation
		}
		then := time.Now().Add(-2 * time.Minute)
		for _, tc := range []struct {
			row *AttackRow
			seq uint64
		}{{&expired, uint64(then.UnixMicro())}, {&expiredHigh, newest[c.ins[j].Peer] + 1_000_000_000}} {
			r, err := record.Sign(priv, record.Record{Name: attackName, PublicKey: priv.Public().(ed25519.PublicKey),
				Endpoints: []string{c.ins[j].Endpoint}, Seq: tc.seq, Issued: then, Expires: then.Add(record.MaxLifetime), Delegation: deleg})
			if err != nil {
				return err
			}
			send(tc.row, r, true)
		}
	}
	after = counters(honest)
	expired.Reasons = rejections(before, after) // both rows

	// Finds after the replays: never an older version, never the withdrawn
	// instance.
	want := c.live()
	check := func(row *AttackRow, outs []findOutcome) {
		for _, o := range outs {
			if o.res == nil {
				continue
			}
			for _, in := range o.res.Instances {
				id, _ := peer.Decode(in.Peer)
				if id == gone.Peer || in.Seq < newest[id] {
					row.Through++
				}
			}
		}
	}
	pinned := AttackRow{Case: "finds pinning the real publisher"}
	check(&pinned, a.findRow(ctx, &pinned, attackName, []ed25519.PublicKey{c.pub}, want, a.as.Finds))
	open := AttackRow{Case: "finds pinning nothing"}
	check(&open, a.findRow(ctx, &open, attackName, nil, want, a.as.Finds))
	rep.Rows = append(rep.Rows, stale, resurrect, expired, expiredHigh, pinned, open)
	rep.Notes = append(rep.Notes, fmt.Sprintf("captured %d versions of %d instances before replaying", countVersions(captured), len(captured)))
	return nil
}

func countVersions(m map[peer.ID]map[uint64]*record.Record) int {
	n := 0
	for _, vs := range m {
		n += len(vs)
	}
	return n
}

// mapsUnion returns a new map with the keys of a and b.
func mapsUnion[K comparable](a, b map[K]bool) map[K]bool {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}
