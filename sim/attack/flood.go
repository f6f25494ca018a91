package attack

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cellnode/cellnode/internal/wire"
	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// floodVariant is one way of flooding a name: how each record is made.
type floodVariant struct {
	label string
	name  string
	toPub bool // also try the real publisher's set
}

// flood runs AttackFlood: for each variant, two real instances announce,
// FloodPeers adversary hosts put FloodRecords valid records (each from its
// own node key) at the name's storers, then two more real instances
// start, and finders that pin the real publisher and finders that pin
// nothing look for all four.
func (a *arena) flood(ctx context.Context, rep *AttackReport) error {
	k := a.as.Network.BucketSize
	pubPriv := a.key("publisher")
	pub := pubPriv.Public().(ed25519.PublicKey)
	ids := a.honestIDs()
	var flooders []host.Host
	for i := range a.as.FloodPeers {
		h, err := a.adversary(a.key(fmt.Sprintf("flooder-%d", i)))
		if err != nil {
			return err
		}
		flooders = append(flooders, h)
	}
	keys := rand.NewChaCha8(sim.Seed(a.as.Network.Seed, "flood-keys"))
	nodeKey := func() ed25519.PrivateKey {
		var s [ed25519.SeedSize]byte
		_, _ = keys.Read(s[:])
		return ed25519.NewKeyFromSeed(s[:])
	}
	evilPubs := make([]ed25519.PrivateKey, a.as.FloodRecords/50+1)
	for i := range evilPubs {
		evilPubs[i] = a.key(fmt.Sprintf("flood-publisher-%d", i))
	}
	variants := []floodVariant{
		{label: "one publisher key", name: "acme/flood-one-key"},
		{label: "open records, one node key each", name: "acme/flood-open"},
		{label: "50 records per publisher key", name: "acme/flood-many-keys", toPub: true},
	}
	for vi, v := range variants {
		pubFor := func(i int) ed25519.PrivateKey { // the adversary publisher key of record i, or nil
			switch vi {
			case 0:
				return evilPubs[0]
			case 2:
				return evilPubs[i/50]
			}
			return nil
		}
		early, err := a.startCell(ctx, v.name, pubPriv, a.pick(2))
		if err != nil {
			return err
		}
		// Node keys now; each record is signed when its flooder sends it,
		// so that a long flood does not send expired records.
		privs := make([]ed25519.PrivateKey, a.as.FloodRecords)
		for i := range privs {
			privs[i] = nodeKey()
		}
		signed := func(i int) ([]byte, error) {
			now := time.Now()
			var d *record.Delegation
			if pp := pubFor(i); pp != nil {
				var err error
				if d, err = delegate(pp, v.name, privs[i].Public().(ed25519.PublicKey), now); err != nil {
					return nil, err
				}
			}
			r, err := signRecord(privs[i], v.name, 1, now, fmt.Sprintf("127.0.0.1:%d", 1+i%30), d)
			if err != nil {
				return nil, err
			}
			return r.Bytes(), nil
		}
		nameStorers := closest(record.Key(v.name), ids, k)
		pubStorers := closest(dht.PublisherKey(v.name, pub), ids, k)
		honest := a.honestNodes()
		before := counters(honest)
		var toName, toPub putResult
		var wg sync.WaitGroup
		start := time.Now()
		var signErr error
		var errOnce sync.Once
		for j, h := range flooders {
			wg.Go(func() {
				for i := j; i < len(privs); i += len(flooders) {
					raw, err := signed(i)
					if err != nil {
						errOnce.Do(func() { signErr = err })
						return
					}
					putAll(ctx, h, nameStorers, v.name, nil, raw, &toName)
					if v.toPub {
						putAll(ctx, h, pubStorers, v.name, pub, raw, &toPub)
					}
				}
			})
		}
		wg.Wait()
		if signErr != nil {
			return signErr
		}
		took := time.Since(start)
		row := AttackRow{Case: fmt.Sprintf("%s: %d records from %d peers", v.label, len(privs), len(flooders)),
			Attempts: toName.sent + toPub.sent, Refused: toName.fail + toPub.fail, Stored: toName.ok + toPub.ok,
			Reasons: rejections(before, counters(honest)), Through: toPub.ok}
		row.Note = fmt.Sprintf("%.0f PUT/s", float64(row.Attempts)/took.Seconds())
		rep.Rows = append(rep.Rows, row)

		late, err := a.startCell(ctx, v.name, pubPriv, a.pick(2, instanceNodes(early)...))
		if err != nil {
			return err
		}
		want := mapsUnion(early.live(), late.live())
		pinned := AttackRow{Case: "  finds pinning the real publisher"}
		a.findRow(ctx, &pinned, v.name, []ed25519.PublicKey{pub}, want, a.as.Finds)
		pinned.Through = pinned.Lost // every live instance, always
		pinned.Note = "lost must be 0"
		open := AttackRow{Case: "  finds pinning nothing"}
		a.findRow(ctx, &open, v.name, nil, want, a.as.Finds)
		open.Note = "lost: real instances crowded out of the name's set"
		rep.Rows = append(rep.Rows, pinned, open)
	}

	// One peer alone, as fast as it can, at one storer.
	if err := a.rateLimit(ctx, rep, flooders[0], ids); err != nil {
		return err
	}
	rep.Rows = append(rep.Rows, storeExhaustion(""), storeExhaustion(sim.AttackerNet))
	return nil
}

func instanceNodes(c *realCell) []int {
	var out []int
	for _, in := range c.ins {
		out = append(out, in.Node)
	}
	return out
}

// rateLimit sends 300 PUTs of distinct valid records from one peer to one
// storer, one after the other, and reports how many the per-peer rate
// limit let through.
func (a *arena) rateLimit(ctx context.Context, rep *AttackReport, h host.Host, ids []peer.ID) error {
	const n = 300
	target := ids[0]
	var res putResult
	now := time.Now()
	honest := a.honestNodes()
	before := counters(honest)
	// The storer's rate limit runs on the network's clock: frozen, the
	// limit lets exactly its burst through, however slowly this machine
	// sends the PUTs. This peer flooded the storer in the rows before:
	// 5 s (the burst at 20/s) refill its bucket first, however quickly
	// the finds between ran.
	a.nw.Clock().Advance(5 * time.Second)
	a.nw.Clock().Freeze()
	defer a.nw.Clock().Thaw()
	start := time.Now()
	for i := range n {
		priv := a.key(fmt.Sprintf("rate-%d", i))
		r, err := signRecord(priv, "acme/flood-rate", 1, now, "127.0.0.1:1", nil)
		if err != nil {
			return err
		}
		resp, err := rawCall(ctx, h, target, wire.Request{Op: wire.OpPut, Name: "acme/flood-rate", Record: r.Bytes()})
		res.add(resp, err)
	}
	row := AttackRow{Case: fmt.Sprintf("one peer, %d PUTs back to back, one storer", n), Attempts: res.sent,
		Refused: res.fail, Stored: res.ok,
		Reasons: map[string]uint64{"rate_limited": rejections(before, counters(honest))["rate_limited"]}}
	row.Note = fmt.Sprintf("in %.2f s, clock stopped; limit 20/s, burst 100", time.Since(start).Seconds())
	rep.Rows = append(rep.Rows, row)
	return nil
}

// storeExhaustion shows, on one store with its limits scaled down
// (MaxNames 64), what a flood of many names does to a storer: sets it
// already holds stay (republishing replaces a record in place), a new set
// is refused until the flood's records expire. With source set (the
// flood's IP group), the flood counts against that network's quota (a
// sixteenth of the store) and a new cell's set still gets in.
func storeExhaustion(source string) AttackRow {
	const names = 64
	s := dht.NewStore(dht.StoreConfig{MaxNames: names})
	now := time.Now()
	rec := func(seed byte, name string, seq uint64) []byte {
		var b [ed25519.SeedSize]byte
		b[0] = seed
		r, err := signRecord(ed25519.NewKeyFromSeed(b[:]), name, seq, now, "127.0.0.1:1", nil)
		if err != nil {
			panic(err)
		}
		return r.Bytes()
	}
	row := AttackRow{Case: "one storer, MaxNames 64: 64 flood names"}
	if source != "" {
		row.Case += " from one /16"
	}
	if _, err := s.Put("acme/held", rec(1, "acme/held", 1)); err != nil {
		panic(err)
	}
	for i := range names {
		row.Attempts++
		if _, err := s.PutFrom(source, fmt.Sprintf("flood/n%d", i), nil, rec(2, fmt.Sprintf("flood/n%d", i), 1)); err != nil {
			row.Refused++
		} else {
			row.Stored++
		}
	}
	// The held set is republished; a new cell's first record comes.
	if _, err := s.Put("acme/held", rec(1, "acme/held", 2)); err != nil {
		row.Lost++
	}
	if _, err := s.PutFrom("11.1.0.0/16", "acme/new", nil, rec(3, "acme/new", 1)); errors.Is(err, dht.ErrFull) {
		row.Lost++
		row.Note = "a new cell's set refused (store full); the held one republishes fine"
	} else if err == nil {
		row.Note = "the flood's network hit its quota; the held set republishes and a new cell's set gets in"
	}
	row.Reasons = map[string]uint64{}
	for k, v := range s.Counters() {
		if k != "stored" {
			row.Reasons[k] = v
		}
	}
	return row
}
