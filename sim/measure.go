package sim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

const (
	// opTimeout bounds one announce or one find.
	opTimeout = 30 * time.Second
	// refreshAfter is the age after which Measure publishes a cell's
	// records again before finding it, well inside their 60 s life.
	refreshAfter = 30 * time.Second
)

// Run builds the network of sc, measures sc.Design on it and closes it.
func Run(ctx context.Context, sc Scenario) (*Report, error) {
	nw, err := New(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	return nw.Measure(ctx, nw.sc.Design)
}

// Comparison holds the reports of both designs measured on one network.
type Comparison struct {
	SetStore     *Report `json:"set_store"`
	ValueRecords *Report `json:"value_records"`
}

// Compare builds the network of sc, measures SetStore and then
// ValueRecords on it (same nodes, same routing tables, same instance hosts
// and finders), and closes it. sc.Design is ignored.
func Compare(ctx context.Context, sc Scenario) (*Comparison, error) {
	nw, err := New(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	var c Comparison
	if c.SetStore, err = nw.Measure(ctx, SetStore); err != nil {
		return nil, err
	}
	if c.ValueRecords, err = nw.Measure(ctx, ValueRecords); err != nil {
		return nil, err
	}
	return &c, nil
}

// slot is one instance that Measure announces: a node running a cell.
type slot struct {
	node   int
	name   string
	issued time.Time // of the last record published
}

// Measure announces the scenario's instances with design d, one at a time,
// then runs the scenario's finds one at a time, each from a random live node
// for a random cell, and reports on both phases. The instance hosts and the
// finders are drawn from the scenario's seed among the live nodes, so two
// calls on the same network choose the same ones. Announces here are
// Measure's own (signed with the node's key and published directly), not
// the node's announcer, so that nothing else runs while messages are
// counted. Before a find, the records of its cell are published again if
// they are older than 30 s; those publishes are left out of every figure.
// A find misses if it fails or does not return every instance of the cell.
// Measure returns an error only when it cannot measure: an announce that
// fails, or ctx ending.
func (nw *Network) Measure(ctx context.Context, d Design) (*Report, error) {
	if d != SetStore && d != ValueRecords {
		return nil, fmt.Errorf("%w: design %d", ErrBadScenario, int(d))
	}
	sc := nw.sc
	var live []int
	for i := range nw.members {
		if nw.Alive(i) {
			live = append(live, i)
		}
	}
	if len(live) < sc.InstancesPerCell {
		return nil, fmt.Errorf("sim: measure: %d live nodes, %d instances per cell", len(live), sc.InstancesPerCell)
	}
	rng := rand.New(rand.NewChaCha8(seed(sc.Seed, "schedule")))
	byName := map[string][]*slot{}
	var slots []*slot
	for c := range sc.Cells {
		name := cellName(c)
		for _, j := range rng.Perm(len(live))[:sc.InstancesPerCell] {
			s := &slot{node: live[j], name: name}
			slots = append(slots, s)
			byName[name] = append(byName[name], s)
		}
	}

	sc.Design = d
	rep := &Report{Scenario: sc, Design: d, SetupSeconds: nw.setup.Seconds(),
		HeapBytesPerNode: nw.heapPerNode, GoroutinesPerNode: nw.goroutinesPerNode}

	before := nw.tally()
	var lat []time.Duration
	for _, s := range slots {
		start := time.Now()
		if err := nw.announce(ctx, d, s); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	ann := nw.tally().sub(before)
	rep.Announces = len(slots)
	rep.Announce = latency(lat, sc.RTT())
	rep.MessagesPerAnnounce, rep.BytesPerAnnounce = perOp(ann, len(slots))
	rep.AnnounceMessages = ann.byKind()

	lat = lat[:0]
	var excluded tally
	before = nw.tally()
	for range sc.Finds {
		from, name := live[rng.IntN(len(live))], cellName(rng.IntN(sc.Cells))
		t0 := nw.tally()
		for _, s := range byName[name] {
			if time.Since(s.issued) > refreshAfter {
				if err := nw.announce(ctx, d, s); err != nil {
					return nil, err
				}
			}
		}
		excluded = excluded.add(nw.tally().sub(t0))

		start := time.Now()
		got, err := nw.find(ctx, d, from, name)
		lat = append(lat, time.Since(start))
		if ctx.Err() != nil {
			return nil, fmt.Errorf("sim: measure: %w", ctx.Err())
		}
		missed := err != nil
		for _, s := range byName[name] {
			if !got[nw.members[s.node].node.ID()] {
				missed = true
			}
		}
		if missed {
			rep.Misses++
		}
		if err != nil {
			rep.Errors++
			if rep.FirstError == "" {
				rep.FirstError = err.Error()
			}
		}
	}
	finds := nw.tally().sub(before).sub(excluded)
	rep.Finds = sc.Finds
	if rep.Finds > 0 {
		rep.Success = float64(rep.Finds-rep.Misses) / float64(rep.Finds)
	}
	rep.Find = latency(lat, sc.RTT())
	rep.MessagesPerFind, rep.BytesPerFind = perOp(finds, sc.Finds)
	rep.FindMessages = finds.byKind()
	return rep, nil
}

func cellName(c int) string { return fmt.Sprintf("sim/cell-%d", c) }

// nameCID is the CID that design 2 provides for the cell name: raw codec,
// sha2-256 of the name's DHT key.
func nameCID(name string) cid.Cid {
	h, _ := multihash.Sum([]byte(dht.Key(name)), multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

// announce publishes a fresh signed record of slot s with design d.
func (nw *Network) announce(ctx context.Context, d Design, s *slot) error {
	m := nw.members[s.node]
	now := time.Now()
	r, err := dht.Sign(m.priv, dht.Record{
		Name: s.name, PublicKey: m.priv.Public().(ed25519.PublicKey),
		Endpoints: []string{fmt.Sprintf("[100::%x]:9000", s.node+1)},
		Seq:       nw.nextSeq(now), Issued: now, Expires: now.Add(dht.MaxLifetime),
	})
	if err != nil {
		return fmt.Errorf("sim: sign %s for node %d: %w", s.name, s.node, err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	switch d {
	case SetStore:
		_, err = m.node.DHT().Publish(ctx, r)
	case ValueRecords:
		kad := m.node.DHT().Kad()
		var put, prov error
		var wg sync.WaitGroup
		wg.Go(func() { put = kad.PutValue(ctx, dht.ValueKey(r), r.Bytes()) })
		wg.Go(func() { prov = kad.Provide(ctx, nameCID(s.name), true) })
		wg.Wait()
		err = errors.Join(put, prov)
	}
	if err != nil {
		return fmt.Errorf("sim: %s: announce %s on node %d: %w", d, s.name, s.node, err)
	}
	s.issued = now
	return nil
}

// find finds the live instances of name from node from with design d and
// returns their peers.
func (nw *Network) find(ctx context.Context, d Design, from int, name string) (map[peer.ID]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	m := nw.members[from]
	found := map[peer.ID]bool{}
	switch d {
	case SetStore:
		recs, _, err := m.node.DHT().Find(ctx, name, time.Now)
		for _, r := range recs {
			found[r.Peer] = true
		}
		return found, err
	case ValueRecords:
		// Get each provider's record as soon as the provider is known,
		// while the provider lookup goes on.
		kad := m.node.DHT().Kad()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for p := range kad.FindProvidersAsync(ctx, nameCID(name), 0) {
			wg.Go(func() {
				v, err := kad.GetValue(ctx, dht.Key(name)+"/"+p.ID.String())
				if err != nil {
					return
				}
				r, err := dht.Verify(v, name, time.Now())
				if err != nil || r.Withdrawn || r.Peer != p.ID {
					return
				}
				mu.Lock()
				found[r.Peer] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		return found, ctx.Err()
	}
	return nil, fmt.Errorf("%w: design %d", ErrBadScenario, int(d))
}
