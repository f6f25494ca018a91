package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"maps"
	"math"
	"math/bits"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// Find tuning. A set is replicated at the Replication closest peers, so a
// few of them answering with the same records is strong evidence that the
// set is complete; the rest of the lookup would only confirm it.
const (
	// agreeQuorum is how many storers must answer with the same non-empty
	// set before a find stops early.
	agreeQuorum = 3
	// cacheTTL is how long a find remembers the closest peers of a key. A
	// repeated find asks them straight away, without a lookup.
	cacheTTL = time.Minute
	// cachedAsk is how many remembered closest peers a repeated find asks
	// first.
	cachedAsk = agreeQuorum + 2
	// askRank is how close to the key, among all the peers a find has
	// heard of, a peer must rank to be asked before the lookup ends. Most
	// peers that close are storers; a wider rank only adds messages.
	askRank = 2*agreeQuorum + 2
	// stragglerFactor: once some GETs have answered, a find waits for the
	// rest at most this many times the slowest answer so far (from its
	// ask), and at least stragglerFloor. A storer that slow is most likely
	// gone (a dead QUIC connection answers nothing until the request
	// times out), and the set is replicated at the others.
	stragglerFactor = 3
	stragglerFloor  = 20 * time.Millisecond
	// silentWait is how long a find waits when none of the GETs it sent
	// has answered yet, before it goes on without them (to the lookup,
	// when they were remembered storers).
	silentWait = time.Second
)

// closestCache remembers the closest peers of recently looked-up keys.
type closestCache struct {
	ttl time.Duration // how long an entry lives; 0 means cacheTTL
	mu  sync.Mutex
	m   map[string]cachedPeers
}

func (c *closestCache) life() time.Duration {
	if c.ttl > 0 {
		return c.ttl
	}
	return cacheTTL
}

type cachedPeers struct {
	peers []peer.ID
	at    time.Time
}

func (c *closestCache) get(key string, now time.Time) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.Sub(e.at) > c.life() {
		delete(c.m, key)
		return nil
	}
	return e.peers
}

func (c *closestCache) put(key string, peers []peer.ID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedPeers{}
	}
	for k, e := range c.m { // keep it small: drop stale entries as we go
		if now.Sub(e.at) > c.life() {
			delete(c.m, k)
		}
	}
	c.m[key] = cachedPeers{peers: peers, at: now}
}

// gatherer collects one shard of one set (a name's, or a publisher's for a
// name) from the peers closest to the set's base key. Its setGather asks
// storers for it while kad-dht's lookup is still running, as soon as a
// peer that answered the lookup ranks among the closest seen so far; it
// is done once agreeQuorum storers agree.
type gatherer struct {
	d    *Node
	req  request
	key  kb.ID
	ctx  context.Context // the GETs': the caller's, so that a GET cut off as a straggler still ends (and a dead storer is forgotten, see call) after the gather returns
	t0   time.Time
	now  func() time.Time
	near int           // common prefix length with the key from which an answer counts towards agreement; -1: none does (yet: see nearNow); under mu
	done chan struct{} // closed once the answers agree
	news chan struct{} // signalled (without blocking) on every answer or failure

	rank *ranker

	mu       sync.Mutex
	pending  int // GETs sent and not yet answered (records verified) or failed
	inflight int // GETs sent whose answer has not arrived and that have not failed
	counted  int // answers arrived from core storers, or empty from the closest peers: after one, the rest may be stragglers
	asked    map[peer.ID]bool
	holders  []peer.ID // peers that answered with valid records
	raws     [][]byte
	seen     map[string]*record.Record // raw record → the record if valid for this set, else nil
	seenPeer map[peer.ID]bool          // the instances seen, with a valid record
	answers  []answer                  // near peers' answers with valid records
	agreers  []peer.ID                 // near peers whose answers agree (see tally)
	answered int
	lastAsk  time.Time     // when the last GET was sent
	slowest  time.Duration // the slowest answer so far, from its ask
	first    time.Duration
	closed   bool
	rejected map[string]int       // invalid records received, by Reason
	knew     map[peer.ID]int      // with Config.PathCache: peers that answered, and how many instances their answer held a valid record of
	shard    int                  // the shard of the set asked for
	learn    func(int)            // told of every shard count above 1 met (records and advice); nil: none
	moves    *moves               // the newest record of each instance over the set's shards; nil: this shard alone
	core     func(peer.ID)        // told of every peer that answered as a core storer of the set (outside the lock); nil: none
	onRecord func(*record.Record) // told of every valid record as it is first verified (outside the lock); nil: none
	checking map[string]*check    // raw record → its verification, by the first answer that brought it (see checkAll)

	// verifyFn, in tests, replaces verify.
	verifyFn func(raw []byte, now time.Time) (*record.Record, error)
}

// check is one record's verification, done by the first answer that
// brings it; the answers that bring it meanwhile wait for its verdict.
type check struct {
	done chan struct{} // closed once v is set
	v    verdict
}

// ask sends the GET to p once. trusted says p is known to be among the
// closest peers (from a completed lookup), so its answer counts towards
// agreement wherever it stands, if p says it is a core storer (see take).
func (g *gatherer) ask(p peer.ID, trusted bool) { g.askWith(p, trusted, nil) }

// askWith is ask with fetch, when not nil, in place of the GET: it returns
// p's answer for g's shard (see setGather.askShardLocked). It reports whether p
// was asked now (false: asked before, or g is closed).
func (g *gatherer) askWith(p peer.ID, trusted bool, fetch func() (*response, error)) bool {
	g.mu.Lock()
	if g.asked[p] || g.closed {
		g.mu.Unlock()
		return false
	}
	g.asked[p] = true
	sent := time.Now()
	g.lastAsk = sent
	g.pending++
	g.inflight++
	g.mu.Unlock()
	go func() {
		arrived := false
		defer func() {
			g.mu.Lock()
			g.pending--
			if !arrived {
				g.inflight--
			}
			g.mu.Unlock()
			g.signal()
		}()
		if fetch == nil {
			fetch = func() (*response, error) {
				g.d.count.add("get_sent", 1)
				return g.d.call(g.ctx, p, g.req)
			}
		}
		resp, err := fetch()
		if err != nil {
			return
		}
		now := g.now()
		learnt := 0 // the largest shard count met, told after the lock
		if resp.Shards <= record.MaxShards {
			learnt = int(resp.Shards)
		}
		defer func() {
			if learnt > 1 && g.learn != nil {
				g.learn(learnt)
			}
		}()
		recs := resp.Records[:min(len(resp.Records), maxSetFactor*MaxPerNameDefault)] // one peer cannot flood a find
		// The answer is in: it is no straggler, however long its records
		// take to verify. They are verified outside the lock, so that a
		// large set's answers are verified in parallel.
		g.mu.Lock()
		arrived = true
		g.inflight--
		if resp.Core || (trusted && len(resp.Records) == 0) {
			g.counted++
		}
		g.slowest = max(g.slowest, time.Since(sent))
		g.mu.Unlock()
		checked := g.checkAll(recs, now)
		most, fresh := g.take(p, trusted, resp.Core, recs, checked)
		learnt = max(learnt, most)
		if g.onRecord != nil {
			for _, r := range fresh {
				g.onRecord(r)
			}
		}
		if resp.Core && g.core != nil {
			g.core(p)
		}
	}()
	return true
}

// take counts p's answer: recs, the records it held, with the verdicts
// of those not seen before (checkAll). trusted is as for ask; core, that
// p says it is a core storer of the set. It returns the largest shard
// count of the valid records among recs, and the valid records no answer
// brought before, unless g is closed (for g.onRecord).
func (g *gatherer) take(p peer.ID, trusted, core bool, recs [][]byte, checked map[string]verdict) (learnt int, fresh []*record.Record) {
	g.mu.Lock()
	defer g.mu.Unlock()
	// An answer counts towards agreement if it comes from a peer that
	// says it is a core storer of the set (among the Replication closest
	// by its own table: it should hold every record) and is one of the
	// closest peers of a lookup or near the key. A peer that says it is
	// not holds what publishers sent it on their way, and may lack some
	// (with finds asking a lookup's closest as soon as it converges, such
	// answers came before the core storers' often enough to end a find
	// of a large cell without an instance: 3 of 20 in the simulator).
	near := g.nearNow()
	counts := core && (trusted || (near >= 0 && kb.CommonPrefixLen(kb.ConvertPeerID(p), g.key) >= near))
	g.answered++
	knows := map[peer.ID]bool{} // the instances this answer holds a valid record of
	for _, r := range recs {
		rec, known := g.seen[string(r)]
		if !known {
			v, ok := checked[string(r)]
			if !ok { // checkAll gives a verdict for every record not seen: cannot happen
				continue
			}
			rec = v.rec
			g.seen[string(r)] = rec
			if v.err != nil {
				g.rejected[record.Reason(v.err)]++
			} else {
				g.raws = append(g.raws, r)
				g.seenPeer[rec.Peer] = true
				g.moves.saw(rec, g.shard)
				if g.onRecord != nil && !g.closed {
					fresh = append(fresh, rec)
				}
			}
		}
		if rec != nil {
			knows[rec.Peer] = true
			learnt = max(learnt, rec.ShardCount())
		}
	}
	if g.knew != nil {
		g.knew[p] = len(knows)
	}
	if len(knows) == 0 {
		return learnt, fresh // junk or nothing: neither agrees nor disagrees
	}
	g.holders = append(g.holders, p)
	if g.first == 0 {
		g.first = time.Since(g.t0)
	}
	if counts {
		g.answers = append(g.answers, answer{p, ipGroups(g.d.host, p), knows, trusted})
	}
	g.agree()
	return learnt, fresh
}

// agree tallies the answers and closes g.done once agreeQuorum of them
// agree. Called with g.mu held.
func (g *gatherer) agree() {
	g.tally()
	if len(g.agreers) >= agreeQuorum && !g.closed && !g.crowded() {
		g.closed = true
		close(g.done)
	}
}

// retally tallies the answers again: the instances to agree on have
// changed (one of them has a newer record in another shard, see moves).
func (g *gatherer) retally() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.agree()
	g.mu.Unlock()
	g.signal()
}

// checkAll returns the verdicts of the records of recs that g has not
// seen yet, each verified once per find: a record that another answer is
// verifying (the storers of a set mostly hold the same bytes, and their
// answers come together) is not verified again, its verdict is waited
// for. Every answer verifies the records it claimed before it waits for
// others', so no two answers wait on each other.
func (g *gatherer) checkAll(recs [][]byte, now time.Time) map[string]verdict {
	var mine, theirs []*check
	var mineRaw, theirsRaw [][]byte
	g.mu.Lock()
	if g.checking == nil {
		g.checking = map[string]*check{}
	}
	for _, r := range recs {
		if _, known := g.seen[string(r)]; known {
			continue
		}
		if c, ok := g.checking[string(r)]; ok {
			theirs, theirsRaw = append(theirs, c), append(theirsRaw, r)
			continue
		}
		c := &check{done: make(chan struct{})}
		g.checking[string(r)] = c
		mine, mineRaw = append(mine, c), append(mineRaw, r)
	}
	g.mu.Unlock()
	verify := g.verify
	if g.verifyFn != nil {
		verify = g.verifyFn
	}
	out := make(map[string]verdict, len(mine)+len(theirs))
	for i, c := range mine {
		rec, err := verify(mineRaw[i], now)
		c.v = verdict{rec, err}
		close(c.done)
		out[string(mineRaw[i])] = c.v
	}
	for i, c := range theirs {
		<-c.done
		out[string(theirsRaw[i])] = c.v
	}
	return out
}

// nearNow returns g.near, first setting it from the peers the lookup has
// heard of if the network's size was unknown when the find began: a
// one-shot node's routing table holds its bootstrap peers alone (it does
// not refresh), so neither kad-dht nor the table gives an estimate, and
// without one no answer could end the find early; it then waited for
// kad-dht's whole lookup, a new connection to each of the closest peers
// (16 to 22 round trips on the netns benchmark's 40-node network, where
// the records were in hand after one). The peers a lookup hears of first
// are its responders' closest to the key, which is what the estimator
// wants (see sizeFrom). Called with g.mu held.
func (g *gatherer) nearNow() int {
	if g.near < 0 {
		g.near = g.d.nearFromSize(sizeFrom(g.key, g.rank.closest(g.d.cfg.BucketSize)))
	}
	return g.near
}

// answer is what one near peer's answer held.
type answer struct {
	from    peer.ID
	groups  []string // from's IP groups when it answered
	knows   map[peer.ID]bool
	trusted bool // from the closest peers of a completed or remembered lookup
}

// tally sets g.agreers: the near peers whose answers hold a record (in any
// version: a storer that still holds an older copy agrees) of every
// instance seen so far in this shard but those whose newest record seen
// is in another shard (instances that moved at a split: their old records
// stay at some storers and not others until they expire, and the newer
// record is what the find returns), at most one per IP group, so that one network's
// Sybils holding a stale subset cannot end a find. A peer that no longer
// ranks among the Replication closest heard of does not count: it may be
// a peer near the key that took some publishers' early PUTs and not
// others'. Called with g.mu held.
func (g *gatherer) tally() {
	gc := newGroupCount(g.d.host, 1)
	g.agreers = g.agreers[:0]
	need := g.seenPeer
	if g.moves != nil {
		need = g.moves.here(g.seenPeer, g.shard)
	}
	for _, a := range g.answers {
		if !a.trusted && g.rank.rankOf(a.from) >= g.d.cfg.Replication {
			continue
		}
		if len(a.knows) >= len(need) && covers(a.knows, need) && gc.takeGroups(a.groups) {
			g.agreers = append(g.agreers, a.from)
		}
	}
}

func covers(knows, all map[peer.ID]bool) bool {
	for p := range all {
		if !knows[p] {
			return false
		}
	}
	return true
}

// crowded reports whether more than perGroup of the Replication closest
// peers heard of share an IP group: the mark of Sybils ground close to the
// key. Their sets at the honest peers around them are then ragged (each
// publisher's lookup met other honest peers on its way), so a find does not
// stop early but asks a diverse set of the closest once its lookup ends.
// Called with g.mu held.
func (g *gatherer) crowded() bool {
	gc := newGroupCount(g.d.host, perGroup)
	for _, p := range g.rank.closest(g.d.cfg.Replication) {
		if !gc.take(p) {
			return true
		}
	}
	return false
}

// valid returns raw decoded if it is a live record of the set asked for,
// and nil otherwise, counting the rejection. Called with g.mu held.
func (g *gatherer) valid(raw []byte, now time.Time) *record.Record {
	r, err := g.verify(raw, now)
	if err != nil {
		g.rejected[record.Reason(err)]++
		return nil
	}
	return r
}

// verify checks that raw is a live record of the set asked for: of its
// name, in its shard, and of its publisher when one is asked for.
func (g *gatherer) verify(raw []byte, now time.Time) (*record.Record, error) {
	r, err := record.VerifyIn(raw, g.req.Name, g.shard, now)
	if err == nil && g.req.Publisher != nil && !bytes.Equal(r.Publisher(), g.req.Publisher) {
		err = record.ErrWrongPublisher
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// verdict is a record verified outside the gatherer's lock.
type verdict struct {
	rec *record.Record
	err error
}

// ranker ranks the peers a lookup hears of by closeness to its key, so
// that the likely storers can be contacted before the lookup ends.
type ranker struct {
	self  peer.ID
	key   kb.ID
	near  int // see Node.nearPrefix
	mu    sync.Mutex
	known map[peer.ID]bool
	cands []peer.ID // closest first
}

func newRanker(self peer.ID, key kb.ID, near int) *ranker {
	return &ranker{self: self, key: key, near: near, known: map[peer.ID]bool{}}
}

// add records p, heard of for the first time, and reports its rank among
// the peers heard of so far (0: closest). ok is false if p was heard of
// before, is this node, or, when the network's size is known, shares less
// than the near prefix with the key: such a peer is most likely not a
// storer, and a lookup responder that far still leads the lookup on.
func (r *ranker) add(p peer.ID) (rank int, ok bool) {
	if p == r.self {
		return 0, false
	}
	id := kb.ConvertPeerID(p)
	if r.near >= 0 && kb.CommonPrefixLen(id, r.key) < r.near {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.known[p] {
		return 0, false
	}
	r.known[p] = true
	i := sort.Search(len(r.cands), func(i int) bool {
		return closer(r.key, id, kb.ConvertPeerID(r.cands[i]))
	})
	r.cands = append(r.cands, "")
	copy(r.cands[i+1:], r.cands[i:])
	r.cands[i] = p
	return i, true
}

// rankOf returns p's rank among the peers heard of so far (0: closest),
// or how many were heard of if p was not.
func (r *ranker) rankOf(p peer.ID) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := kb.ConvertPeerID(p)
	i := sort.Search(len(r.cands), func(i int) bool {
		return !closer(r.key, kb.ConvertPeerID(r.cands[i]), id)
	})
	return i
}

// closest returns the n closest peers heard of so far, closest first.
func (r *ranker) closest(n int) []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cands[:min(n, len(r.cands))])
}

// remember returns the peers a repeated find should ask, best first: those
// whose answers agreed last (they hold the whole set), then the others
// that answered with valid records, closest to the key first, then the
// given closest peers.
func (g *gatherer) remember(closest []peer.ID) []peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := slices.Clone(g.holders)
	sort.Slice(h, func(i, j int) bool {
		return closer(g.key, kb.ConvertPeerID(h[i]), kb.ConvertPeerID(h[j]))
	})
	out := slices.Clone(g.agreers)
	for _, l := range [][]peer.ID{h, closest} {
		for _, p := range l {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// closer reports whether a is strictly closer to key than b.
func closer(key, a, b kb.ID) bool {
	return bytes.Compare(kb.ID(xor(key, a)), kb.ID(xor(key, b))) < 0
}

func xor(a, b kb.ID) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// gatherStats is what one gather reports into FindStats.
type gatherStats struct {
	closest, asked, answered int
	lookups                  int // closest-peer lookups run
	lookup, first            time.Duration
	early, cached            bool
	agreed                   bool // agreeQuorum answers agreed: the set is complete
	lookupErr                error
	rejected                 map[string]int
	verified                 []*record.Record // the records gathered, verified (signatures included), in order
}

// nearPrefix is the common prefix length with a key from which a peer is
// likely among the Replication closest to it, from an estimate of the
// network's size: log2(size/Replication) - 1. The estimate is kad-dht's
// (from its recent lookups) or, on a fresh node that has not done enough
// lookups for one, networkSizeFromTable's. It is -1 (no peer is near
// enough to stop a find early) while there is neither.
func (d *Node) nearPrefix(sp *space) int {
	n, err := sp.kad.NetworkSize()
	if err != nil || n <= 0 {
		n = int32(min(d.networkSizeFromTable(sp), math.MaxInt32))
	}
	return d.nearFromSize(int(n))
}

// nearFromSize is nearPrefix for a network of n nodes; -1 when n is not
// positive (unknown).
func (d *Node) nearFromSize(n int) int {
	if n <= 0 {
		return -1
	}
	return max(0, bits.Len(uint(n/d.cfg.Replication))-2)
}

// minSizeSamples is how many table peers networkSizeFromTable needs.
const minSizeSamples = 4

// networkSizeFromTable estimates the network's size from this node's own
// routing table: IDs are uniform, so the i-th closest peer to our own ID
// lies about i/N of the key space away, and a least-squares fit of those
// distances gives N (the estimator kad-dht applies to its lookups' results,
// here on the table a bootstrap's self-lookup filled). It returns 0 with
// fewer than minSizeSamples peers.
func (d *Node) networkSizeFromTable(sp *space) int {
	self := kb.ConvertPeerID(d.host.ID())
	return sizeFrom(self, sp.kad.RoutingTable().NearestPeers(self, d.cfg.BucketSize))
}

// sizeFrom estimates the network's size from the peers closest to a point
// ref of the key space, closest first: the i-th lies about i/N away. It
// returns 0 with fewer than minSizeSamples peers.
func sizeFrom(ref kb.ID, peers []peer.ID) int {
	if len(peers) < minSizeSamples {
		return 0
	}
	var num, den float64
	for i, p := range peers {
		x := xor(ref, kb.ConvertPeerID(p))
		dist := float64(binary.BigEndian.Uint64(x[:8])) / (1 << 64)
		k := float64(i + 1)
		num += k * k
		den += k * dist
	}
	if den <= 0 {
		return 0
	}
	return int(num / den)
}

// newGatherer returns the gatherer of shard shard of the set of name (pub
// nil) or of the publisher pub for name, whose shards all live at the
// peers closest to key (the set's base key, setKey), ranked by rank.
// learn (if not nil) is told of every shard count above 1 it meets.
func (d *Node) newGatherer(ctx context.Context, sp *space, key kb.ID, rank *ranker, name string, pub ed25519.PublicKey, shard int, now func() time.Time, learn func(int)) *gatherer {
	g := &gatherer{d: d, req: request{Op: opGet, Name: name, Publisher: pub, Shard: uint64(shard)}, key: key, shard: shard, learn: learn,
		ctx: ctx, t0: time.Now(), now: now, near: d.nearPrefix(sp), done: make(chan struct{}), news: make(chan struct{}, 1),
		asked: map[peer.ID]bool{}, seen: map[string]*record.Record{}, seenPeer: map[peer.ID]bool{}, rejected: map[string]int{}, rank: rank}
	if d.cfg.PathCache {
		g.knew = map[peer.ID]int{}
	}
	return g
}

// finish closes g and returns the valid records it gathered, with its
// part of st: how many peers it asked and heard, when the first record
// came, what it rejected and whether its answers agreed.
func (g *gatherer) finish(st gatherStats) ([][]byte, gatherStats) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	st.asked, st.answered, st.first = len(g.asked), g.answered, g.first
	st.rejected = maps.Clone(g.rejected)
	st.agreed = len(g.agreers) >= agreeQuorum
	st.verified = make([]*record.Record, len(g.raws))
	for i, raw := range g.raws {
		st.verified[i] = g.seen[string(raw)]
	}
	g.d.cacheOnPath(g)
	return append([][]byte(nil), g.raws...), st
}

// maxCount returns the largest shard count among the valid records g has
// seen (1 for none).
func (g *gatherer) maxCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 1
	for _, r := range g.seen {
		if r != nil {
			n = max(n, r.ShardCount())
		}
	}
	return n
}

// signal tells a waiting wait that an answer or a failure came in.
func (g *gatherer) signal() {
	select {
	case g.news <- struct{}{}:
	default:
	}
}

// wait blocks until the answers agree (true), or every GET sent so far has
// answered or failed, or the rest are stragglers, or ctx ends (false). The
// GETs still out go on: a late answer can still make the answers agree.
// Stragglers are the GETs unanswered stragglerFactor times the slowest
// answer so far after the last GET was sent, or silentWait after it when
// nothing has answered; so a dead storer costs a few round trips, not a
// request timeout.
func (g *gatherer) wait(ctx context.Context) bool {
	timer := time.NewTimer(silentWait)
	defer timer.Stop()
	for {
		g.mu.Lock()
		pending, inflight := g.pending, g.inflight
		wait := silentWait
		if g.counted > 0 {
			// Stragglers only once a core storer has answered (or one
			// of the closest, with nothing): the peripheral peers met
			// on the way, which hold part of a set, answer faster than
			// the core storers of a large one, whose answers are long.
			wait = max(stragglerFloor, stragglerFactor*g.slowest)
		}
		wait -= time.Since(g.lastAsk)
		g.mu.Unlock()
		select {
		case <-g.done:
			return true
		default:
		}
		// Answers in and being verified are waited for; those not in
		// yet, only until they are stragglers.
		if pending == 0 || (pending == inflight && wait <= 0) {
			return false
		}
		if pending > inflight || wait <= 0 {
			wait = silentWait // woken by the news of the answers being verified
		}
		timer.Reset(wait)
		select {
		case <-g.done:
			return true
		case <-g.news:
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
}

// lookup runs kad-dht's closest-peer lookup for key and calls heard with
// every peer it hears of, as they turn up: first the nearest peers of our
// own routing table, then each lookup responder and the closer peers it
// names. It returns the lookup's closest peers, or stopped once stop is
// closed (the lookup is then cancelled).
//
// converged, when not nil, is told the same closest peers as soon as the
// lookup has converged: kad-dht then queries once more every one of them
// it has not heard back from (its follow-up round, which establishes
// connections and does not change the result) and returns only once they
// have answered, a round trip or more later; the caller can ask them in
// the meantime.
func (d *Node) lookup(ctx context.Context, sp *space, key string, heard func(peer.ID), stop <-chan struct{}, converged func([]peer.ID)) (peers []peer.ID, err error, stopped bool) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, p := range sp.kad.RoutingTable().NearestPeers(kb.ConvertKey(key), askRank) {
		heard(p)
	}
	evctx, events := routing.RegisterForQueryEvents(lctx)
	var lookups <-chan *kaddht.LookupEvent
	if converged != nil {
		evctx, lookups = kaddht.RegisterForLookupEvents(evctx)
	}
	cv := newConvergence(key, d.cfg.BucketSize)
	tell := func(ev *kaddht.LookupEvent) { // converged, once, from the event that ends the query phase
		if closest, ok := cv.add(ev); ok && converged != nil {
			converged(closest)
			converged = nil
		}
	}
	type result struct {
		peers []peer.ID
		err   error
	}
	done := make(chan result, 1)
	go func() {
		p, err := sp.kad.GetClosestPeers(evctx, key)
		done <- result{p, err}
	}()
	defer func() {
		go func() { // drain what the lookup still publishes until it ends
			for range events {
			}
		}()
		if lookups != nil {
			go func() {
				for range lookups {
				}
			}()
		}
	}()
	// kad-dht waits up to 10 s for a FIND_NODE's answer, and a peer killed
	// while connected over QUIC leaves a connection that takes the query and
	// never answers; the lookup then waits on it before it can end. A query
	// outstanding past the peer's request budget (requestBudget, as for our
	// own requests) gets the peer forgotten, which closes its connections
	// and so fails the query at once.
	// Before that, a query unanswered after the peer's probe delay gets the
	// peer checked once with Config.PeerGone (a refused TCP port: the
	// process is gone), and forgotten at once if it is.
	sent := map[peer.ID]time.Time{}
	probed := map[peer.ID]bool{}
	due := make(chan peer.ID)
	tick := time.NewTicker(silentCheck)
	defer tick.Stop()
	evs := events
	for {
		select {
		case p := <-due:
			if _, ok := sent[p]; !ok || probed[p] {
				continue
			}
			probed[p] = true
			go func() {
				if d.cfg.PeerGone(lctx, p) {
					d.count.add("lookup_gone_peers", 1)
					d.forget(p)
				}
			}()
		case ev, ok := <-lookups:
			if !ok {
				lookups = nil
				continue
			}
			tell(ev)
		case ev, ok := <-evs:
			if !ok {
				evs = nil // closed early: wait for the result alone
				continue
			}
			switch ev.Type {
			case routing.SendingQuery:
				sent[ev.ID] = time.Now()
				if d.cfg.PeerGone != nil && !probed[ev.ID] {
					p := ev.ID
					t := time.AfterFunc(d.probeDelay(p), func() {
						select {
						case due <- p:
						case <-lctx.Done():
						}
					})
					defer t.Stop()
				}
			case routing.QueryError:
				delete(sent, ev.ID)
			case routing.PeerResponse:
				delete(sent, ev.ID)
				heard(ev.ID)
				for _, ai := range ev.Responses {
					heard(ai.ID)
				}
			}
		case <-tick.C:
			for p, at := range sent {
				if time.Since(at) > d.requestBudget(p) {
					delete(sent, p)
					d.count.add("lookup_silent_peers", 1)
					d.forget(p)
				}
			}
		case res := <-done:
			// The lookup's events are buffered: take those still
			// waiting, so that converged is told, if it was not yet.
			for waiting := true; waiting && converged != nil && lookups != nil; {
				select {
				case ev, ok := <-lookups:
					if !ok {
						lookups = nil
					}
					tell(ev) // a nil event (closed) tells nothing
				default:
					waiting = false
				}
			}
			return res.peers, res.err, false
		case <-stop:
			return nil, nil, true
		}
	}
}

// convergence follows one kad-dht lookup's peer set through its lookup
// events, to tell its result when the lookup converges: the k closest
// peers of the set that are not unreachable, as kad-dht computes it then.
type convergence struct {
	target      string // the lookup's key: events of any other lookup are ignored
	key         kb.ID
	k           int
	unreachable map[peer.ID]bool // every peer of the set: true once unreachable
	done        bool
}

func newConvergence(key string, k int) *convergence {
	return &convergence{target: key, key: kb.ConvertKey(key), k: k, unreachable: map[peer.ID]bool{}}
}

// add takes one lookup event and, on the first that ends the lookup's
// query phase as converged (every closest peer queried, or none left to
// ask), returns the lookup's closest peers, closest first.
func (c *convergence) add(ev *kaddht.LookupEvent) ([]peer.ID, bool) {
	if c.done || ev == nil || (ev.Key != nil && ev.Key.Key != c.target) {
		return nil, false
	}
	for _, up := range []*kaddht.LookupUpdateEvent{ev.Request, ev.Response} {
		if up == nil {
			continue
		}
		for _, set := range [][]*kaddht.PeerKadID{up.Heard, up.Waiting, up.Queried} {
			for _, p := range set {
				if _, ok := c.unreachable[p.Peer]; !ok {
					c.unreachable[p.Peer] = false
				}
			}
		}
		for _, p := range up.Unreachable {
			c.unreachable[p.Peer] = true
		}
	}
	if ev.Terminate == nil {
		return nil, false
	}
	c.done = true
	if r := ev.Terminate.Reason; r != kaddht.LookupCompleted && r != kaddht.LookupStarvation {
		return nil, false
	}
	var out []peer.ID
	for p, gone := range c.unreachable {
		if !gone {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return closer(c.key, kb.ConvertPeerID(out[i]), kb.ConvertPeerID(out[j]))
	})
	return out[:min(c.k, len(out))], true
}

// silentCheck is how often a lookup looks for queries outstanding past
// their peer's request budget.
const silentCheck = 100 * time.Millisecond
