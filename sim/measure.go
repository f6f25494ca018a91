package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

const (
	// OpTimeout bounds one announce or one find.
	OpTimeout = 30 * time.Second
	// republishParallel is how many nodes republish at once.
	republishParallel = 4
)

// Run builds the network of sc, measures sc.Design on it (and, with
// sc.Baseline, ValueRecords beside it, in Report.Baseline) and closes it.
func Run(ctx context.Context, sc Scenario) (*Report, error) {
	return RunWith(ctx, sc, nil)
}

// RunWith is Run that reports its progress to progress (nil: nowhere): one
// line per phase, and every few finds.
func RunWith(ctx context.Context, sc Scenario, progress func(string)) (*Report, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	progress(fmt.Sprintf("setting up %d nodes", sc.WithDefaults().Nodes))
	nw, err := New(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	progress(fmt.Sprintf("setup done in %.1f s", nw.SetupSeconds()))
	designs := []Design{nw.sc.Design}
	if nw.sc.Baseline && nw.sc.Design != ValueRecords {
		designs = append(designs, ValueRecords)
	}
	reps, err := nw.measure(ctx, designs, progress)
	if err != nil {
		return nil, err
	}
	if len(reps) > 1 {
		reps[0].Baseline = reps[1]
		reps[0].VsBaseline = ratios(reps[0], reps[1])
	}
	return reps[0], nil
}

// Comparison holds the reports of both designs measured on one network.
type Comparison struct {
	SetStore     *Report `json:"set_store"`
	ValueRecords *Report `json:"value_records"`
}

// Compare builds the network of sc, measures SetStore and ValueRecords on
// it side by side (same nodes, same routing tables, same instance hosts,
// finders and schedule: each find is run with one design and then the
// other), and closes it. sc.Design and sc.Baseline are ignored.
func Compare(ctx context.Context, sc Scenario) (*Comparison, error) {
	nw, err := New(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer nw.Close()
	reps, err := nw.measure(ctx, []Design{SetStore, ValueRecords}, nil)
	if err != nil {
		return nil, err
	}
	return &Comparison{SetStore: reps[0], ValueRecords: reps[1]}, nil
}

// Measure announces the scenario's instances with design d, runs the
// scenario's find phase (finds, churn, partition) and its staleness phase,
// and reports on them. It kills nodes (churn, staleness), so a second
// Measure on the same network measures what is left; to compare designs,
// use Compare or Scenario.Baseline, which run them side by side.
//
// The instance hosts are drawn from the scenario's seed among the live
// honest nodes at the start. Announces are Measure's own (a record signed
// with the host's key and clock, published directly), not the node's
// announcer, so that nothing else runs while messages are counted; each
// instance is published again every Scenario.Republish of simulated time,
// and those republishes count as announces too.
//
// Between two finds the network's clock moves Scenario.FindEvery forward
// and the churn and partition events that fall due happen. A find is from a
// random live honest node of the scenario's own (not one that joined
// later, which may still be refreshing its routing table) for a random
// cell; it misses if it fails or does not return every instance whose host
// is alive and on the finder's side of any partition. Its messages are
// those the finder sent from its start until they stop coming (a find that
// stops early leaves requests in flight). Every Scenario.RepeatEvery-th
// find is repeated at once from the same node, and timed apart.
//
// The staleness phase republishes the records of Scenario.Kills instance
// hosts, kills the hosts (no withdrawal), and finds their cells from three
// finders while moving the clock forward, until the records have expired
// everywhere: Report.Staleness says how long the dead instances were still
// returned.
//
// Measure returns an error only when it cannot measure: an announce that
// fails at the start, or ctx ending.
func (nw *Network) Measure(ctx context.Context, d Design) (*Report, error) {
	if d != SetStore && d != ValueRecords {
		return nil, fmt.Errorf("%w: design %d", ErrBadScenario, int(d))
	}
	reps, err := nw.measure(ctx, []Design{d}, nil)
	if err != nil {
		return nil, err
	}
	return reps[0], nil
}

// slot is one instance that Measure announces: a node running a cell.
type slot struct {
	node   int
	name   string
	issued time.Time // on the network's clock, of the last record published
	// expires is when the last record published expires, on the
	// network's clock; failed, that the last republish failed.
	expires time.Time
	failed  bool
}

// run is the state of one measure.
type run struct {
	nw       *Network
	ctx      context.Context
	designs  []Design
	reps     []*Report
	acc      []*acc
	slots    []*slot
	byName   map[string][]*slot
	hosts    map[int]bool
	rng      *rand.Rand // finders and names
	churnRng *rand.Rand
	progress func(string)
	sched    hash.Hash // of every choice made, see Report.Schedule
	part     string    // "before", "during", "after" the partition; "" without one
	warmLoad loadMark  // the servers' load of the finders' warm-ups, left out of Report.Load
}

// note adds a choice to the schedule's hash.
func (r *run) note(format string, a ...any) { fmt.Fprintf(r.sched, format+"\n", a...) }

// acc gathers the samples of one design.
type acc struct {
	announces               int
	announce, announceFirst []time.Duration
	annMsgs                 tally
	republishes             int   // announces after the first
	repMsgs                 tally // their messages
	find, first, repeat     []time.Duration
	findMsgs                tally
	phase                   map[string]*PhaseStats
}

func (nw *Network) measure(ctx context.Context, designs []Design, progress func(string)) ([]*Report, error) {
	if progress == nil {
		progress = func(string) {}
	}
	sc := nw.sc
	r := &run{nw: nw, ctx: ctx, designs: designs, byName: map[string][]*slot{}, hosts: map[int]bool{},
		rng:      rand.New(rand.NewChaCha8(Seed(sc.Seed, "schedule"))),
		churnRng: rand.New(rand.NewChaCha8(Seed(sc.Seed, "churn"))),
		progress: progress, sched: sha256.New()}
	live := nw.liveHonest()
	if len(live) < sc.InstancesPerCell {
		return nil, fmt.Errorf("sim: measure: %d live honest nodes, %d instances per cell", len(live), sc.InstancesPerCell)
	}
	for c := range sc.Cells {
		name := cellName(c)
		for _, j := range r.rng.Perm(len(live))[:sc.InstancesPerCell] {
			s := &slot{node: live[j], name: name}
			r.note("host %d %s", s.node, name)
			r.slots = append(r.slots, s)
			r.byName[name] = append(r.byName[name], s)
			r.hosts[s.node] = true
		}
	}
	for _, d := range designs {
		sc := sc
		sc.Design = d
		r.reps = append(r.reps, &Report{Scenario: sc, Design: d, Nodes: sc.Nodes, RTTMS: ms(nw.rtt),
			SetupSeconds: nw.setup.Seconds(), Memory: nw.mem,
			HeapBytesPerNode: nw.mem.HeapBytes, GoroutinesPerNode: nw.mem.Goroutines})
		r.acc = append(r.acc, &acc{phase: map[string]*PhaseStats{}})
	}

	progress(fmt.Sprintf("announcing %d instances", len(r.slots)))
	for _, s := range r.slots {
		if err := r.announce(s, true, nil); err != nil {
			return nil, err
		}
	}
	if sc.Hot != nil {
		return r.hot()
	}
	mark := nw.markLoad()
	ann0 := r.acc[0].announces
	if err := r.findPhase(); err != nil {
		return nil, err
	}
	load := nw.load(mark, nw.markLoad().minus(r.warmLoad))
	if sec := load.SimSeconds; sec > 0 {
		rep := r.reps[0]
		load.AnnouncesPerSecond = float64(r.acc[0].announces-ann0) / sec
		load.FindsPerSecond = float64(rep.Finds+len(r.acc[0].repeat)) / sec
		load.JoinsPerSecond, load.LeavesPerSecond = float64(rep.Churn.Joined)/sec, float64(rep.Churn.Left)/sec
	}
	if sc.Kills > 0 {
		if err := r.stalenessPhase(); err != nil {
			return nil, err
		}
	}
	end := memUse().perNode(nw.mem0, len(nw.liveHonest()))
	load.PeakRSSBytes = float64(peakRSS())
	load.Shared = len(r.reps) > 1
	for k, rep := range r.reps {
		rep.MemoryEnd = end
		rep.Load = load
		r.finish(rep, r.acc[k])
	}
	return r.reps, nil
}

// finders returns the nodes a find may start from: the live honest nodes
// among the scenario's own (a node that joined later may still be
// refreshing its routing table in the background).
func (r *run) finders() []int {
	var out []int
	for _, i := range r.nw.liveHonest() {
		if i < r.nw.sc.Nodes {
			out = append(out, i)
		}
	}
	return out
}

// liveHonest returns the live honest nodes.
func (nw *Network) liveHonest() []int {
	var live []int
	for i := range nw.Len() {
		if nw.Alive(i) && nw.Honest(i) {
			live = append(live, i)
		}
	}
	return live
}

func cellName(c int) string { return fmt.Sprintf("sim/cell-%d", c) }

// nameCID is the CID that design 2 provides for the cell name: raw codec,
// sha2-256 of the name's DHT key.
func nameCID(name string) cid.Cid {
	h, _ := multihash.Sum([]byte(record.Key(name)), multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}

// announce publishes a fresh record of s with every design and counts it,
// holding mu (if not nil) to add to the figures. An error is returned only
// when must is set (the first announce); otherwise a failed republish is
// left to show in the finds.
func (r *run) announce(s *slot, must bool, mu *sync.Mutex) error {
	m := r.nw.member(s.node)
	for k, d := range r.designs {
		a := r.acc[k]
		before := m.meter.snapshot()
		var first atomic.Int64
		start := time.Now()
		if d == SetStore {
			m.meter.setTap(func(ev tapEvent) {
				if ev.Op == 1 && ev.Error == "" {
					first.CompareAndSwap(0, int64(ev.At.Sub(start)))
				}
			})
		}
		err := r.nw.announce(r.ctx, d, s)
		took := time.Since(start)
		m.meter.setTap(nil)
		s.failed = err != nil
		if err != nil {
			if must || r.ctx.Err() != nil {
				return err
			}
			continue
		}
		if mu != nil {
			mu.Lock()
		}
		a.announces++
		if must {
			// Only the first announces, one at a time, are timed: the
			// republishes of many nodes share this machine's CPUs.
			a.announce = append(a.announce, took)
			if f := first.Load(); f > 0 {
				a.announceFirst = append(a.announceFirst, time.Duration(f))
			}
		}
		spent := m.meter.snapshot().sub(before)
		a.annMsgs = a.annMsgs.add(spent)
		if !must {
			a.republishes++
			a.repMsgs = a.repMsgs.add(spent)
		}
		if mu != nil {
			mu.Unlock()
		}
	}
	return nil
}

// announce publishes a fresh signed record of slot s with design d.
func (nw *Network) announce(ctx context.Context, d Design, s *slot) error {
	m := nw.member(s.node)
	now := nw.Now(s.node)
	expires := nw.clock.Now().Add(nw.sc.Lifetime)
	r, err := record.Sign(m.priv, record.Record{
		Name: s.name, PublicKey: m.priv.Public().(ed25519.PublicKey),
		Endpoints: []string{fmt.Sprintf("[100::%x]:9000", s.node+1)},
		Seq:       nw.nextSeq(now), Issued: now, Expires: now.Add(nw.sc.Lifetime),
	})
	if err != nil {
		return fmt.Errorf("sim: sign %s for node %d: %w", s.name, s.node, err)
	}
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	switch d {
	case SetStore:
		// Signed again with more shards when the storers advise it
		// (dht.PublishSigned), as the announcer does.
		_, _, err = m.node.DHT().PublishSigned(ctx, s.name, func(shards int) (*record.Record, error) {
			r.Shards = shards
			r.Seq = nw.nextSeq(now)
			return record.Sign(m.priv, *r)
		})
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
	s.issued, s.expires = nw.clock.Now(), expires
	return nil
}

// republish announces again every live slot whose record is
// Scenario.Republish old: the slots of one node one after the other (so
// that each announce's messages are its own), republishParallel nodes at
// once.
func (r *run) republish() error {
	now := r.nw.clock.Now()
	byNode := map[int][]*slot{}
	for _, s := range r.slots {
		if r.nw.Alive(s.node) && now.Sub(s.issued) >= r.nw.sc.Republish {
			byNode[s.node] = append(byNode[s.node], s)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, republishParallel)
	for _, slots := range byNode {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, s := range slots {
				r.announce(s, false, &mu)
			}
		})
	}
	wg.Wait()
	return r.ctx.Err()
}

// event is a churn or partition event of the find phase.
type event struct {
	at   time.Duration // since the find phase began, simulated
	kind int
}

const (
	evLeave = iota
	evJoin
	evSplit
	evHeal
)

// schedule returns the churn and partition events of the find phase, in
// order.
func (r *run) schedule() []event {
	sc := r.nw.sc
	span := time.Duration(sc.Finds) * sc.FindEvery
	var evs []event
	spread := func(n int, kind int) {
		if n == 0 {
			return
		}
		every := float64(span) / float64(n)
		if sc.Churn.PerMinute > 0 {
			// n events at PerMinute × (n / leaves) per minute.
			leaves := max(1, int(math.Round(sc.Churn.Leave*float64(sc.Nodes))))
			every = float64(time.Minute) / sc.Churn.PerMinute * float64(leaves) / float64(n)
		}
		for k := range n {
			at := time.Duration(every * (float64(k) + 0.5))
			if at < span {
				evs = append(evs, event{at, kind})
			}
		}
	}
	spread(int(math.Round(sc.Churn.Leave*float64(sc.Nodes))), evLeave)
	spread(int(math.Round(sc.Churn.Join*float64(sc.Nodes))), evJoin)
	if p := sc.Partition; p != nil {
		evs = append(evs, event{p.At, evSplit})
		if p.Heal > 0 {
			evs = append(evs, event{p.Heal, evHeal})
		}
	}
	slices.SortStableFunc(evs, func(a, b event) int { return int(a.at - b.at) })
	return evs
}

// apply carries out one event.
func (r *run) apply(ev event) error {
	nw := r.nw
	switch ev.kind {
	case evLeave:
		var cands []int
		for _, i := range nw.liveHonest() {
			if !r.hosts[i] && i >= nw.sc.Bootstrap {
				cands = append(cands, i)
			}
		}
		if len(cands) <= 1 {
			return nil
		}
		i := cands[r.churnRng.IntN(len(cands))]
		r.note("leave %v %d", ev.at, i)
		for _, rep := range r.reps {
			rep.Churn.Left++
		}
		return nw.Kill(i)
	case evJoin:
		i, err := nw.Join(r.ctx)
		r.note("join %v %d", ev.at, i)
		for _, rep := range r.reps {
			rep.Churn.Joined++
			if err != nil {
				rep.Churn.JoinErrors++
			}
		}
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
	case evSplit:
		nw.Split(rand.New(rand.NewChaCha8(Seed(nw.sc.Seed, "partition"))), nw.sc.Partition.Fraction)
		for i := range nw.Len() {
			side, _ := nw.Side(i)
			r.note("side %d %d", i, side)
		}
		r.part = "during"
		r.progress("partition: split")
	case evHeal:
		nw.Heal()
		r.part = "after"
		r.progress("partition: healed")
	}
	return nil
}

func (r *run) findPhase() error {
	nw, sc := r.nw, r.nw.sc
	evs := r.schedule()
	if sc.Partition != nil {
		r.part = "before"
	}
	t0 := nw.clock.Now()
	r.progress(fmt.Sprintf("running %d finds", sc.Finds))
	for j := range sc.Finds {
		at := time.Duration(j) * sc.FindEvery
		nw.clock.AdvanceTo(t0.Add(at))
		// The events due before the next find happen before this one, so
		// that all of the phase's happen.
		for len(evs) > 0 && evs[0].at < at+sc.FindEvery {
			if err := r.apply(evs[0]); err != nil {
				return err
			}
			evs = evs[1:]
		}
		if err := r.republish(); err != nil {
			return err
		}
		live := r.finders()
		from, name := live[r.rng.IntN(len(live))], cellName(r.rng.IntN(sc.Cells))
		repeat := sc.RepeatEvery > 0 && j%sc.RepeatEvery == sc.RepeatEvery-1
		r.note("find %d %d %s", j, from, name)
		for k, d := range r.designs {
			if err := r.find(k, d, from, name, r.part, repeat); err != nil {
				return err
			}
		}
		if (j+1)%max(1, sc.Finds/10) == 0 {
			r.progress(fmt.Sprintf("finds: %d/%d", j+1, sc.Finds))
		}
	}
	return nil
}

// expected returns the peers that a find of name from node from must
// return: the instances whose host is alive and reachable, but those
// whose last record expired before the find began without a failed
// republish (lapsed): the simulator republishes a few nodes at a time,
// so with many instances (the announce phase of a large cell takes
// minutes, and the first republish round more than a record's life)
// it lets records expire that every node, republishing on its own,
// would have renewed. No find can return those; they are counted in
// Report.Lapsed. A record whose republish failed stays wanted.
func (r *run) expected(from int, name string) (want map[peer.ID]bool, lapsed int) {
	want = map[peer.ID]bool{}
	now := r.nw.clock.Now()
	for _, s := range r.byName[name] {
		if r.nw.Alive(s.node) && r.nw.Reachable(from, s.node) {
			if !s.failed && !s.expires.IsZero() && !now.Before(s.expires) {
				lapsed++
				continue
			}
			want[r.nw.Node(s.node).ID()] = true
		}
	}
	return want, lapsed
}

// find runs one measured find (and its repeat) with design k.
func (r *run) find(k int, d Design, from int, name, phase string, repeat bool) error {
	nw, rep, a := r.nw, r.reps[k], r.acc[k]
	m := nw.member(from)
	if !m.warmed.Load() {
		// The warm-up stands for the table refreshes of a long-running
		// node, which come every 10 minutes, not before a find: its load
		// on the servers is left out of Report.Load.
		w0 := nw.markLoad()
		nw.warm(r.ctx, m)
		r.settle(m)
		r.warmLoad = r.warmLoad.plus(nw.markLoad().minus(w0))
	}
	want, lapsed := r.expected(from, name)
	rep.Lapsed += lapsed
	before := m.meter.snapshot()
	start := time.Now()
	var first atomic.Int64
	onFirst := func(at time.Time) { first.CompareAndSwap(0, int64(at.Sub(start))) }
	if d == SetStore {
		m.meter.setTap(func(ev tapEvent) {
			if ev.Op != 2 || ev.Name != name || ev.Error != "" || first.Load() != 0 {
				return
			}
			for _, raw := range ev.Records {
				rec, err := record.Verify(raw, name, nw.Now(from))
				if err == nil && !rec.Withdrawn && want[rec.Peer] {
					onFirst(ev.At)
					return
				}
			}
		})
	}
	got, fst, err := nw.find(r.ctx, d, from, name, want, onFirst)
	took := time.Since(start)
	m.meter.setTap(nil)
	r.settle(m)
	if r.ctx.Err() != nil {
		return fmt.Errorf("sim: measure: %w", r.ctx.Err())
	}
	a.find = append(a.find, took)
	if f := first.Load(); f > 0 {
		a.first = append(a.first, time.Duration(f))
	}
	a.findMsgs = a.findMsgs.add(m.meter.snapshot().sub(before))
	missed := err != nil
	for p := range want {
		missed = missed || !got[p]
	}
	if missed && err == nil && rep.FirstMiss == "" {
		rep.FirstMiss = fmt.Sprintf("node %d, %s: %d of %d instances; %+v", from, name, len(got), len(want), fst)
	}
	for p := range got {
		if !want[p] {
			if o := nw.byPeer(p); o != nil && !nw.Alive(o.idx) {
				rep.StaleReturns++
			}
		}
	}
	rep.Finds++
	rep.InstancesWanted += len(want)
	for p := range want {
		if got[p] {
			rep.InstancesFound++
		}
	}
	rep.ShardsMax = max(rep.ShardsMax, fst.Shards)
	rep.ShardsUnanswered += len(fst.Unanswered)
	if fst.Early {
		rep.EarlyStops++
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
	if phase != "" {
		ps := a.phase[phase]
		if ps == nil {
			ps = &PhaseStats{}
			a.phase[phase] = ps
		}
		ps.Finds++
		if missed {
			ps.Misses++
		}
	}
	if repeat {
		start := time.Now()
		_, st, _ := nw.find(r.ctx, d, from, name, want, nil)
		a.repeat = append(a.repeat, time.Since(start))
		if st.Cached {
			rep.RepeatsCached++
		}
	}
	return nil
}

// settle waits until m's meter has not moved for two of the longest
// round trips (a second at most): a find that stops early leaves requests
// in flight, and their messages belong to it, not to the next find.
func (r *run) settle(m *member) {
	q := 2 * r.nw.maxLatency()
	q = min(max(q, 2*time.Millisecond), 500*time.Millisecond)
	deadline := time.Now().Add(time.Second)
	for prev := m.meter.snapshot(); time.Now().Before(deadline); {
		time.Sleep(q)
		cur := m.meter.snapshot()
		if cur == prev {
			return
		}
		prev = cur
	}
}

// byPeer returns the member with peer ID p, or nil.
func (nw *Network) byPeer(p peer.ID) *member {
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	return nw.byID[p]
}

// find finds the live instances of name from node from with design d and
// returns their peers. For ValueRecords, onFirst (if not nil) is called
// when the first record of a peer in want is verified; for SetStore, the
// tap sees that.
func (nw *Network) find(ctx context.Context, d Design, from int, name string, want map[peer.ID]bool, onFirst func(time.Time)) (map[peer.ID]bool, dht.FindStats, error) {
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	m := nw.member(from)
	now := func() time.Time { return nw.Now(from) }
	found := map[peer.ID]bool{}
	switch d {
	case SetStore:
		recs, st, err := m.node.DHT().Find(ctx, name, nil, now)
		for _, r := range recs {
			found[r.Peer] = true
		}
		return found, st, err
	case ValueRecords:
		// Get each provider's record as soon as the provider is known,
		// while the provider lookup goes on.
		kad := m.node.DHT().Kad()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for p := range kad.FindProvidersAsync(ctx, nameCID(name), 0) {
			wg.Go(func() {
				v, err := kad.GetValue(ctx, record.Key(name)+"/"+p.ID.String())
				if err != nil {
					return
				}
				r, err := record.Verify(v, name, now())
				if err != nil || r.Withdrawn || r.Peer != p.ID {
					return
				}
				if onFirst != nil && want[r.Peer] {
					onFirst(time.Now())
				}
				mu.Lock()
				found[r.Peer] = true
				mu.Unlock()
			})
		}
		wg.Wait()
		return found, dht.FindStats{}, ctx.Err()
	}
	return nil, dht.FindStats{}, fmt.Errorf("%w: design %d", ErrBadScenario, int(d))
}

// stalenessPhase kills instance hosts and finds their cells until their
// records have expired everywhere. It measures the first design only.
func (r *run) stalenessPhase() error {
	nw, sc := r.nw, r.nw.sc
	d, rep := r.designs[0], r.reps[0]
	nw.Heal()
	// Victims: hosts of distinct cells first.
	var victims []*slot
	seen := map[string]bool{}
	perm := r.rng.Perm(len(r.slots))
	for pass := 0; pass < 2 && len(victims) < sc.Kills; pass++ {
		for _, i := range perm {
			s := r.slots[i]
			if len(victims) < sc.Kills && nw.Alive(s.node) && !slices.Contains(victims, s) && (pass == 1 || !seen[s.name]) {
				victims = append(victims, s)
				seen[s.name] = true
			}
		}
	}
	// Republish the victims at once, so their records have their whole
	// life ahead: the worst case.
	for _, s := range victims {
		s.issued = time.Time{}
	}
	if err := r.republish(); err != nil {
		return err
	}
	issued := map[*slot]time.Time{}
	for _, s := range victims {
		issued[s] = s.issued
	}
	var finders []int
	cands := r.finders()
	for _, i := range r.rng.Perm(len(cands)) {
		n := cands[i]
		if !r.hosts[n] && len(finders) < 3 {
			finders = append(finders, n)
		}
	}
	if len(finders) == 0 {
		return nil
	}
	for _, f := range finders {
		nw.warm(r.ctx, nw.member(f))
	}
	for _, s := range victims {
		r.note("kill %d", s.node)
	}
	r.note("finders %v", finders)
	r.progress(fmt.Sprintf("staleness: killing %d instance hosts", len(victims)))
	for _, s := range victims {
		if err := nw.Kill(s.node); err != nil {
			return err
		}
	}
	st := &rep.Staleness
	st.Killed = len(victims)
	st.BoundMS = ms(sc.Lifetime + record.MaxSkew + 2*sc.Skew)
	kill := nw.clock.Now()
	fineFrom := sc.Lifetime + record.MaxSkew - 2*sc.Skew - 2*time.Second
	end := sc.Lifetime + record.MaxSkew + 2*sc.Skew + time.Second
	const coarse, fine = 5 * time.Second, 250 * time.Millisecond
	lastSeen := time.Duration(-1)
	for {
		elapsed := nw.clock.Now().Sub(kill)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, s := range victims {
			victim := nw.Node(s.node).ID()
			for _, f := range finders {
				if !nw.Alive(f) {
					continue
				}
				wg.Go(func() {
					got, _, _ := nw.find(r.ctx, d, f, s.name, nil, nil)
					now := nw.clock.Now()
					mu.Lock()
					defer mu.Unlock()
					st.Finds++
					if !got[victim] {
						return
					}
					since := now.Sub(kill)
					st.Returns++
					lastSeen = max(lastSeen, since)
					st.MaxMS = max(st.MaxMS, ms(since))
					st.MaxPastLifeMS = max(st.MaxPastLifeMS, ms(now.Sub(issued[s].Add(sc.Lifetime))))
					// The protocol's promise: a finder accepts a record
					// until its own clock passes Expires + MaxSkew.
					bound := issued[s].Add(sc.Lifetime + record.MaxSkew + nw.Skew(s.node) - nw.Skew(f))
					if now.After(bound.Add(fine)) {
						st.Violations++
					}
				})
			}
		}
		wg.Wait()
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("sim: staleness: %w", err)
		}
		if elapsed >= end && lastSeen < elapsed {
			break
		}
		step := fine
		if elapsed+coarse < fineFrom {
			step = coarse
		}
		nw.clock.Advance(step)
		if err := r.republish(); err != nil {
			return err
		}
	}
	st.StepMS = ms(fine)
	return nil
}

// finish computes the report's figures from the samples.
func (r *run) finish(rep *Report, a *acc) {
	rtt := r.nw.rtt
	rep.Announces = a.announces
	rep.Announce = latency(a.announce, rtt)
	rep.AnnounceFirst = latency(a.announceFirst, rtt)
	rep.MessagesPerAnnounce, rep.BytesPerAnnounce = perOp(a.annMsgs, rep.Announces)
	rep.AnnounceMessages = a.annMsgs.byKind()
	rep.Republishes = a.republishes
	rep.MessagesPerRepublishOnly, rep.BytesPerRepublishOnly = perOp(a.repMsgs, a.republishes)
	rep.RepublishMessages = a.repMsgs.byKind()
	rep.BytesPerInstanceMinute = rep.BytesPerAnnounce * float64(time.Minute) / float64(r.nw.sc.Republish)
	if rep.Finds > 0 {
		rep.Success = float64(rep.Finds-rep.Misses) / float64(rep.Finds)
	}
	rep.Find = latency(a.find, rtt)
	rep.FindFirst = latency(a.first, rtt)
	rep.FindRepeat = latency(a.repeat, rtt)
	rep.MessagesPerFind, rep.BytesPerFind = perOp(a.findMsgs, rep.Finds)
	rep.FindMessages = a.findMsgs.byKind()
	if len(a.phase) > 0 {
		rep.Phases = map[string]PhaseStats{}
		for k, p := range a.phase {
			if p.Finds > 0 {
				p.Success = float64(p.Finds-p.Misses) / float64(p.Finds)
			}
			rep.Phases[k] = *p
		}
	}
	rep.Nodes = r.nw.sc.Nodes
	rep.LiveNodes = len(r.nw.liveHonest())
	rep.Schedule = hex.EncodeToString(r.sched.Sum(nil))[:16]
	rep.Rejected = r.nw.rejections()
}

// rejections sums, over every node, the records refused by storers and
// dropped by finders, by reason, and the requests refused by rate limits.
func (nw *Network) rejections() map[string]uint64 {
	out := map[string]uint64{}
	for i := range nw.Len() {
		for k, v := range nw.Node(i).DHT().Counters() {
			if v > 0 && (strings.HasPrefix(k, "rejected_") || strings.HasPrefix(k, "find_rejected_") || k == "rate_limited") {
				out[k] += v
			}
		}
	}
	return out
}

// ratios returns rep's figures over the baseline's.
func ratios(rep, base *Report) map[string]float64 {
	out := map[string]float64{}
	put := func(k string, a, b float64) {
		if b > 0 {
			out[k] = a / b
		}
	}
	put("find_p50", rep.Find.P50MS, base.Find.P50MS)
	put("find_p95", rep.Find.P95MS, base.Find.P95MS)
	put("find_p99", rep.Find.P99MS, base.Find.P99MS)
	put("find_first_p50", rep.FindFirst.P50MS, base.FindFirst.P50MS)
	put("find_repeat_p50", rep.FindRepeat.P50MS, base.FindRepeat.P50MS)
	put("find_success", rep.Success, base.Success)
	put("messages_per_find", rep.MessagesPerFind, base.MessagesPerFind)
	put("bytes_per_find", rep.BytesPerFind, base.BytesPerFind)
	put("announce_p50", rep.Announce.P50MS, base.Announce.P50MS)
	put("messages_per_announce", rep.MessagesPerAnnounce, base.MessagesPerAnnounce)
	put("bytes_per_announce", rep.BytesPerAnnounce, base.BytesPerAnnounce)
	return out
}
