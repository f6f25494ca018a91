package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

// skew runs AttackSkew. The storers are nodes that join with peer IDs
// ground closer to the cell's keys (the name's and the publisher's) than
// any other node, so that every lookup ends at nodes whose clock the
// scenario sets; the other honest nodes get the storers' clock too, since
// a publisher also sends its record to likely storers it meets on the way.
// The publisher and the finder join, as DHT clients, with clocks of their
// own. Each case signs a record for a fresh node key (delegated by the
// publisher key) on the publisher's clock, publishes it and finds it.
func (a *arena) skew(ctx context.Context, rep *AttackReport) error {
	k := a.as.Network.BucketSize
	pubPriv := a.key("publisher")
	pub := pubPriv.Public().(ed25519.PublicKey)
	ids := a.honestIDs()
	grinder := rand.NewChaCha8(sim.Seed(a.as.Network.Seed, "skew-grind"))
	var storers []*extra
	tries := 0
	for _, key := range []string{record.Key(attackName), dht.PublisherKey(attackName, pub)} {
		want := maxCPL(key, ids) + 1
		for range k {
			priv, n := grind(grinder, key, want)
			tries += n
			e, err := a.join(ctx, priv)
			if err != nil {
				return err
			}
			storers = append(storers, e)
		}
	}
	// Clients, so that neither stores the record itself.
	publisher, err := a.joinVia(ctx, a.key("skew-publisher"), nil, dht.ModeClient, false)
	if err != nil {
		return err
	}
	finder, err := a.joinVia(ctx, a.key("skew-finder"), nil, dht.ModeClient, false)
	if err != nil {
		return err
	}
	isStorer := map[peer.ID]bool{}
	var storerNodes []*node.Node
	for _, s := range storers {
		isStorer[s.node.ID()] = true
		storerNodes = append(storerNodes, s.node)
	}
	// The finder's lookups must end at the ground storers.
	for _, key := range []string{record.Key(attackName), dht.PublisherKey(attackName, pub)} {
		got, err := finder.node.DHT().Kad().GetClosestPeers(ctx, key)
		if err != nil {
			return fmt.Errorf("%w: lookup: %v", errAttack, err)
		}
		n := 0
		for _, p := range got {
			if isStorer[p] {
				n++
			}
		}
		if n < k {
			rep.Notes = append(rep.Notes, fmt.Sprintf("only %d of the %d closest peers of %s are the clock-set storers", n, len(got), key))
		}
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%d storers ground close to the name's and the publisher's keys (%d keys tried)", len(storers), tries))

	seq := uint64(time.Now().UnixMicro())
	for i, sc := range a.as.Skew {
		for _, s := range storers {
			s.clock.Set(time.Duration(sc.Storer))
		}
		for _, i := range a.honest() {
			a.nw.SetSkew(i, time.Duration(sc.Storer))
		}
		publisher.clock.Set(time.Duration(sc.Publisher))
		finder.clock.Set(time.Duration(sc.Finder))

		inst := a.key(fmt.Sprintf("skew-instance-%d", i))
		now := publisher.clock.Now()
		d, err := delegate(pubPriv, attackName, inst.Public().(ed25519.PublicKey), now)
		if err != nil {
			return err
		}
		seq++
		r, err := signRecord(inst, attackName, seq, now, "127.0.0.1:1", d)
		if err != nil {
			return err
		}
		before := counters(storerNodes)
		pctx, cancel := context.WithTimeout(ctx, sim.OpTimeout)
		st, _ := publisher.node.DHT().Publish(pctx, r)
		cancel()
		after := counters(storerNodes)
		o := find(ctx, finder.node, attackName, []ed25519.PublicKey{pub}, map[peer.ID]bool{r.Peer: true})
		found := o.lost == 0 && o.err == nil

		row := AttackRow{
			Case:     fmt.Sprintf("publisher %+v, storers %+v, finder %+v", time.Duration(sc.Publisher), time.Duration(sc.Storer), time.Duration(sc.Finder)),
			Attempts: st.Sent, Stored: st.Stored, Refused: st.Sent - st.Stored,
			Reasons: rejections(before, after), Finds: 1,
		}
		if found == sc.Found {
			row.FindsOK = 1
		}
		if found && !sc.Found {
			row.Through = 1 // accepted beyond the tolerance
		}
		if !found {
			if sc.Found {
				row.Lost = 1
			}
			if _, err := record.Verify(r.Bytes(), attackName, finder.clock.Now()); err != nil {
				row.Reasons["finder_"+record.Reason(err)]++
			}
		}
		if sc.Found {
			row.Note = "want found"
		} else {
			row.Note = "want refused"
		}
		rep.Rows = append(rep.Rows, row)
	}
	return nil
}
