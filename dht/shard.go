package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Sharded sets. A cell with more instances than a set holds spreads them
// over S sets (shards, named by ShardKey): an instance belongs in shard
// record.ShardOf(peer, S), where S, a power of two up to
// record.MaxShards, is signed in its record. Every shard of a set lives
// at the peers closest to the set's base key (setKey: the key of shard 0,
// so a cell of one shard is stored as before sharding); the shard bounds
// the size of one answer, not where the set lives. A publisher PUTs to the
// base key's closest, naming its shard; a finder does one lookup, for the
// base key, and asks each peer for every shard (see setGather).
//
// Storers advise S (Store.Advice): the largest count among a set's live
// records, doubled once records with that count fill three quarters of
// the set. They refuse a record signed with less (ErrShardCount), and a
// publisher signs again with the advice at once (PublishSigned). A
// shard that grows splits: half its instances stay, carrying the doubled
// count, half move to shard s+S. So every shard in use can be reached from
// shard 0: a finder reads shard 0, learns S from its valid records and
// its storers' advice (Store.FindAdvice: over every shard they hold),
// asks shards 1 to S-1 of the same peers at once, and asks more if one of
// them shows a larger count. Records of an instance that
// moved stay live in its old shard until they expire; a find keeps the
// newest record of each instance over all shards, so a withdrawal in the
// new shard hides them.

// maxReshard bounds how many times PublishSigned signs again: the count
// can double at most log2(record.MaxShards) times.
const maxReshard = 7

// shardMemo remembers, by name, the shard count this node last signed
// with (publishes) and the one its last find used (for cacheTTL, so that
// a repeated find asks every shard at once).
type shardMemo struct {
	mu   sync.Mutex
	sign map[string]int
	find map[string]cachedCount
}

type cachedCount struct {
	n  int
	at time.Time
}

// signHint returns the shard count to sign the next record of name with.
func (m *shardMemo) signHint(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(1, m.sign[name])
}

func (m *shardMemo) signed(name string, n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sign == nil {
		m.sign = map[string]int{}
	}
	m.sign[name] = n
}

// findHint returns the shard count a find of name starts with: the one
// a find of the last minute used, else 1.
func (m *shardMemo) findHint(name string, now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.find[name]; ok && now.Sub(c.at) <= cacheTTL {
		return c.n
	}
	return 1
}

func (m *shardMemo) found(name string, n int, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.find == nil {
		m.find = map[string]cachedCount{}
	}
	for k, c := range m.find {
		if now.Sub(c.at) > cacheTTL {
			delete(m.find, k)
		}
	}
	if n > 1 {
		m.find[name] = cachedCount{n, now}
	} else {
		delete(m.find, name)
	}
}

// PublishSigned signs a record of the cell name with sign, given the shard
// count to carry, and publishes it (Publish). When the storers advise
// more shards than it carries, it signs again with their advice and
// publishes that, at most maxReshard times; the next publish of the name
// starts from the count last signed. It returns the last record signed.
func (d *Node) PublishSigned(ctx context.Context, name string, sign func(shards int) (*record.Record, error)) (*record.Record, PublishStats, error) {
	n := d.shards.signHint(name)
	for try := 0; ; try++ {
		r, err := sign(n)
		if err != nil {
			return nil, PublishStats{}, err
		}
		if r.Name != name || r.ShardCount() != n {
			return nil, PublishStats{}, fmt.Errorf("dht: publish %s: sign gave a record of %s with %d shards, want %d", name, r.Name, r.ShardCount(), n)
		}
		st, err := d.Publish(ctx, r)
		d.shards.signed(name, n)
		if st.Shards <= n || try == maxReshard || r.Withdrawn || ctx.Err() != nil {
			return r, st, err
		}
		d.count.add("publish_resharded", 1)
		d.log.Debug("storers advise more shards", "cell", name, "shards", n, "advice", st.Shards)
		n = st.Shards
	}
}

// setGather gathers every shard of one set (the name's, or a publisher's
// for the name) in one space. Every shard of a set lives at the peers
// closest to the set's base key (setKey), so one lookup serves them all:
// each peer the find asks is asked for every shard started, shard 0 first
// and every shard below the largest shard count learnt as soon as it is
// learnt (a shard started late is sent the GETs the others were sent, to
// the same peers). Each shard has its own gatherer: its answers must agree
// on their own. The lookup stops once every shard started has agreed.
type setGather struct {
	d    *Node
	ctx  context.Context // the GETs'
	sp   *space
	name string
	pub  ed25519.PublicKey
	now  func() time.Time
	key  string // the set's base key: where all its shards live
	rank *ranker

	moves *moves               // the newest record of each instance, over the shards
	seen  func(*record.Record) // told of each valid record as it is first verified; nil: none (see Node.CollectSeen)

	mu     sync.Mutex
	shards []*gatherer              // by shard: 0 to len-1 started
	asks   []sentAsk                // every peer asked so far, in order
	core   map[peer.ID]bool         // peers that answered shard 0 as core storers of the set
	firsts map[peer.ID]*firstAnswer // peers asked shard 0, and their answers (with the next shards')
	done   bool                     // finished: no shard starts any more
	added  chan struct{}            // signalled (without blocking) when a shard starts
}

type sentAsk struct {
	p       peer.ID
	trusted bool
}

func newSetGather(d *Node, ctx context.Context, sp *space, name string, pub ed25519.PublicKey, now func() time.Time) *setGather {
	key := setKey(name, pub)
	s := &setGather{d: d, ctx: ctx, sp: sp, name: name, pub: pub, now: now, key: key,
		rank: newRanker(d.host.ID(), kb.ConvertKey(key), d.nearPrefix(sp)), added: make(chan struct{}, 1)}
	s.moves = &moves{retally: func(shard int) {
		go func() { // not under the lock of the gatherer that saw the move
			if gs := s.started(shard); len(gs) > 0 {
				gs[0].retally()
			}
		}()
	}}
	return s
}

// moves keeps, for the gatherers of one set's shards, the newest valid
// record seen of each instance (by Seq) and the shard it came in, so that
// a shard's agreement need not wait on the old records of an instance
// that moved to another shard at a split (see gatherer.tally). Only the
// instance's own key signs a newer record, so no one else can hide an
// instance from a shard's agreement this way; and the shard it moved to
// must agree on it. Its lock is taken under a gatherer's, never the
// other way round.
type moves struct {
	retally func(shard int) // asks shard's gatherer to tally again, later
	mu      sync.Mutex
	newest  map[peer.ID]placed
	out     map[int]int // by shard: how many instances seen there have their newest record elsewhere (an upper bound)
}

type placed struct {
	seq   uint64
	shard int
}

// saw notes a valid record r seen in shard. If it is newer than the
// instance's newest seen so far, in another shard, that shard is told to
// tally again.
func (m *moves) saw(r *record.Record, shard int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.newest == nil {
		m.newest, m.out = map[peer.ID]placed{}, map[int]int{}
	}
	old, ok := m.newest[r.Peer]
	switch {
	case !ok:
		m.newest[r.Peer] = placed{r.Seq, shard}
	case r.Seq > old.seq:
		m.newest[r.Peer] = placed{r.Seq, shard}
		if old.shard != shard {
			m.out[old.shard]++
			m.mu.Unlock()
			m.retally(old.shard)
			return
		}
	case old.shard != shard:
		m.out[shard]++
	}
	m.mu.Unlock()
}

// here returns the instances of seen (those seen in shard) whose newest
// record seen is in shard: seen itself when none moved out of it.
func (m *moves) here(seen map[peer.ID]bool, shard int) map[peer.ID]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.out[shard] == 0 {
		return seen
	}
	out := make(map[peer.ID]bool, len(seen))
	for p := range seen {
		if n, ok := m.newest[p]; !ok || n.shard == shard {
			out[p] = true
		}
	}
	return out
}

// learn starts the shards below n not started yet, each asking at once
// every peer asked so far (shards 1 and up: those asksAll holds for). A
// count that is not a power of two up to record.MaxShards (a storer's
// advice is not signed) is ignored.
func (s *setGather) learn(n int) {
	if record.CheckShards(n) != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	for len(s.shards) < n {
		g := s.d.newGatherer(s.ctx, s.sp, s.rank.key, s.rank, s.name, s.pub, len(s.shards), s.now, s.learn)
		g.moves = s.moves
		g.onRecord = s.seen
		first := len(s.shards) == 0
		if first {
			g.core = s.answeredCore
		}
		s.shards = append(s.shards, g)
		for _, a := range s.asks {
			if first || s.asksAll(a.p, a.trusted) || s.firsts[a.p].covers(g.shard) {
				s.askShardLocked(g, a.p, a.trusted)
			}
		}
		select {
		case s.added <- struct{}{}:
		default:
		}
	}
}

// count returns how many shards were asked.
func (s *setGather) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.shards)
}

// started returns the gatherers of the shards started from shard from on.
func (s *setGather) started(from int) []*gatherer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.shards[min(from, len(s.shards)):])
}

// ask sends p the GET of shard 0, and of every other shard started, or
// started later (see learn), once asksAll holds for p. trusted is as for
// gatherer.ask.
func (s *setGather) ask(p peer.ID, trusted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asks = append(s.asks, sentAsk{p, trusted})
	gs := s.shards
	if !s.asksAll(p, trusted) {
		gs = gs[:min(1, len(gs))]
	}
	for _, g := range gs {
		s.askShardLocked(g, p, trusted)
	}
}

// askShardLocked asks p for g's shard, once. Shard 0's GET is marked
// MoreShards, so that p's answer brings the records of every other shard
// it holds (as far as they fit); the GET of another shard to a peer asked
// shard 0 is sent only if that answer, once in, does not hold the shard
// (an older storer, or one whose shards did not all fit), and otherwise
// the shard takes its part of it. So a first find of a sharded set need
// not wait a round trip for shard 0's answer before it asks the rest, and
// a repeated one sends one GET per storer, not one per shard. Called with
// s.mu held.
func (s *setGather) askShardLocked(g *gatherer, p peer.ID, trusted bool) {
	if g.shard == 0 {
		if s.firsts[p] != nil {
			return // asked already
		}
		u := &firstAnswer{done: make(chan struct{})}
		req := g.req
		req.MoreShards = true
		if g.askWith(p, trusted, func() (*response, error) {
			s.d.count.add("get_sent", 1)
			u.resp, u.err = s.d.call(g.ctx, p, req)
			close(u.done)
			if u.err == nil && len(u.resp.More) > 0 {
				s.fed(p, trusted, u)
			}
			resp, _, err := u.part(0)
			return resp, err
		}) {
			if s.firsts == nil {
				s.firsts = map[peer.ID]*firstAnswer{}
			}
			s.firsts[p] = u
		}
		return
	}
	u := s.firsts[p]
	if u == nil {
		g.ask(p, trusted)
		return
	}
	g.askWith(p, trusted, func() (*response, error) {
		if resp, ok, err := u.part(g.shard); ok {
			return resp, err
		}
		s.d.count.add("get_sent", 1)
		return s.d.call(g.ctx, p, g.req)
	})
}

// fed hands every shard started that p's answer to shard 0, u (in), holds
// its part of it; shards started later take theirs as they start (learn).
func (s *setGather) fed(p peer.ID, trusted bool, u *firstAnswer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.shards[min(1, len(s.shards)):] {
		if u.covers(g.shard) {
			s.askShardLocked(g, p, trusted)
		}
	}
}

// firstAnswer is one peer's answer to the GET of shard 0 marked MoreShards,
// which holds the records of the set's next shards at that peer too
// (Response.More).
type firstAnswer struct {
	done chan struct{} // closed once resp and err are set
	resp *response
	err  error
}

// part waits for u and returns its answer for shard, as the answer to a
// GET of that shard alone would be: the shard's records, core if the
// storer says it is a core storer and holds some of them, and its advice.
// ok is false when u does not hold shard (err is then nil).
func (u *firstAnswer) part(shard int) (resp *response, ok bool, err error) {
	<-u.done
	if u.err != nil {
		return nil, true, u.err
	}
	recs := u.resp.Records
	if shard > 0 {
		if shard > len(u.resp.More) {
			return nil, false, nil
		}
		recs = u.resp.More[shard-1]
	}
	return &response{Records: recs, Core: u.resp.Core && len(recs) > 0, Shards: u.resp.Shards}, true, nil
}

// covers reports whether u is in and holds shard (>= 1). A nil u covers
// nothing.
func (u *firstAnswer) covers(shard int) bool {
	if u == nil {
		return false
	}
	select {
	case <-u.done:
		return u.err == nil && shard >= 1 && shard <= len(u.resp.More)
	default:
		return false
	}
}

// asksAll reports whether p is asked for every shard, not only shard 0:
// when it is one of the closest peers of a completed or remembered lookup
// (trusted), or answered shard 0 as a core storer of the set. Every shard
// lives at the core storers; a peer the lookup met on its way that is not
// one of them (it took some publishers' early PUTs, or none) would only
// add S - 1 answers, each of up to a set's worth of records to move and
// verify, to a find. Called with s.mu held.
func (s *setGather) asksAll(p peer.ID, trusted bool) bool {
	return trusted || s.core[p]
}

// answeredCore asks p, which answered shard 0 as a core storer, for
// every other shard started.
func (s *setGather) answeredCore(p peer.ID) {
	s.mu.Lock()
	if s.core[p] {
		s.mu.Unlock()
		return
	}
	if s.core == nil {
		s.core = map[peer.ID]bool{}
	}
	s.core[p] = true
	trusted := false
	for _, a := range s.asks {
		trusted = trusted || (a.p == p && a.trusted)
	}
	for _, g := range s.shards[min(1, len(s.shards)):] {
		s.askShardLocked(g, p, trusted) // once: a shard asked p already does nothing
	}
	s.mu.Unlock()
}

// consider asks p, a peer the lookup has heard of, for every shard if it
// ranks among the askRank closest heard of so far: such a peer is most
// likely a storer, and asking it now saves the round trips the lookup
// would take to confirm that.
func (s *setGather) consider(p peer.ID) {
	if i, ok := s.rank.add(p); ok && i < askRank {
		s.ask(p, false)
	}
}

// learnSeen starts the shards below the largest count of the valid
// records seen (a storer's advice starts them as it arrives; a record's
// count may be told only after its gatherer has agreed), and reports
// whether it started any.
func (s *setGather) learnSeen() bool {
	before := s.count()
	n := 1
	for _, g := range s.started(0) {
		n = max(n, g.maxCount())
	}
	s.learn(n)
	return s.count() > before
}

// watch closes stop once every shard started has agreed (and no valid
// record seen names more shards), or returns when ctx ends. A storer's
// advice that comes with the very answer that made the last shard agree
// may come too late (it is told after); any other answer's advice starts
// its shards in time.
func (s *setGather) watch(ctx context.Context, stop chan<- struct{}) {
	for {
		var open *gatherer
		for _, g := range s.started(0) {
			select {
			case <-g.done:
				continue
			default:
			}
			open = g
			break
		}
		if open == nil {
			if s.learnSeen() {
				continue
			}
			close(stop)
			return
		}
		select {
		case <-open.done:
		case <-s.added:
		case <-ctx.Done():
			return
		}
	}
}

// waitAll waits (gatherer.wait) on every shard started, those started
// meanwhile included, and reports whether every one agreed.
func (s *setGather) waitAll(ctx context.Context) bool {
	all := true
	for from := 0; ; {
		gs := s.started(from)
		if len(gs) == 0 {
			if s.learnSeen() {
				continue
			}
			return all
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, g := range gs {
			wg.Go(func() {
				ok := g.wait(ctx)
				mu.Lock()
				defer mu.Unlock()
				all = all && ok
			})
		}
		wg.Wait()
		from += len(gs)
	}
}

// remember returns the peers a repeated find should ask, best first (see
// gatherer.remember): shard 0's, which are every shard's storers.
func (s *setGather) remember(closest []peer.ID) []peer.ID {
	return s.started(0)[0].remember(closest)
}

// run gathers the set's shards, starting with the first hint (1 for a set
// not known to be sharded), and hands each shard's records and stats to
// add. A repeated find within cacheTTL first asks the remembered closest
// peers of the base key for every remembered shard at once, and skips the
// lookup when every shard's answers agree. Answers count towards agreement
// only if they hold valid records and come from a peer near the key, so
// far or lying peers cannot end a find early.
func (s *setGather) run(hint int, add func(shard int, got [][]byte, gs gatherStats)) {
	gctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.learn(max(1, hint))
	var st gatherStats // the set's: the lookup's part, reported with shard 0
	defer func() {
		s.mu.Lock()
		s.done = true
		gs := slices.Clone(s.shards)
		s.mu.Unlock()
		for i, g := range gs {
			part := st
			if i > 0 {
				part = gatherStats{lookup: st.lookup, early: st.early, cached: st.cached}
			}
			got, gst := g.finish(part)
			add(i, got, gst)
		}
	}()
	if cached := s.sp.closest.get(s.key, time.Now()); len(cached) > 0 {
		for _, p := range cached[:min(cachedAsk, len(cached))] {
			s.ask(p, true)
		}
		if s.waitAll(gctx) {
			st.cached, st.early = true, true
			return
		}
	}

	// The lookup, with likely storers asked as they turn up. The watcher
	// ends with it: it shares the gatherers' news with waitAll.
	stop := make(chan struct{})
	wctx, wcancel := context.WithCancel(gctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		s.watch(wctx, stop)
	}()
	start := time.Now()
	// The lookup's closest (at most 2 per IP group) are asked once it
	// converges, and again (a no-op for those asked) once it returns.
	askClosest := func(closest []peer.ID) []peer.ID {
		peers := s.d.diverse(s.rank.key, s.d.cfg.Replication, closest, s.rank.closest(math.MaxInt))
		for _, p := range peers {
			s.ask(p, true)
		}
		return peers
	}
	peers, err, stopped := s.d.lookup(gctx, s.sp, s.key, s.consider, stop, func(closest []peer.ID) { askClosest(closest) })
	wcancel()
	<-watched
	st.lookups = 1
	st.lookup = time.Since(start)
	if stopped {
		st.early = true
		s.sp.closest.put(s.key, s.remember(nil), time.Now())
		return
	}
	st.lookupErr = err
	peers = askClosest(peers)
	st.closest = len(peers)
	s.waitAll(gctx)
	if err == nil && len(peers) > 0 {
		s.sp.closest.put(s.key, s.remember(peers), time.Now())
	}
}
