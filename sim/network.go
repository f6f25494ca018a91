package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cellnode/cellnode/internal/poll"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrDead is returned (wrapped) by the methods of Network that act on a
// node that Kill has killed.
var ErrDead = errors.New("sim: node is dead")

// Network is a set of real cellnodes on one mocknet. Node i is addressed by
// its index, 0 to Len()-1: the scenario's nodes first, then the nodes that
// joined later (Join), in order; passing any other index panics. Its
// methods are safe for concurrent use; Measure is not meant to run beside
// other work on the same Network, whose messages it would count.
//
// Links between nodes are made when two nodes first talk (a mocknet link
// per pair that ever connects, not one per pair of nodes), with the
// latency of the scenario's model.
type Network struct {
	sc    Scenario // defaults applied
	mn    mocknet.Mocknet
	clock Clock
	rtt   time.Duration // unit of the RTT figures

	setup time.Duration
	mem0  usage  // before setup
	mem   Memory // after setup

	mu          sync.RWMutex
	members     []*member
	byID        map[peer.ID]*member
	closed      bool
	instances   []*Instance
	lastSeq     uint64
	adversaries []AdversaryNodes
	joinRand    *rand.Rand // identities, regions, skews and contacts of joining nodes
	wg          sync.WaitGroup

	linkMu      sync.Mutex // links of every member
	latencyOn   atomic.Bool
	partitioned atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// member is one node of the network.
type member struct {
	idx    int
	node   *node.Node
	host   host.Host // the mocknet host, without the meter
	meter  *meter
	served *meter // requests received, see servedStream
	priv   ed25519.PrivateKey
	dead   atomic.Bool
	region int
	skew   atomic.Int64 // clock skew, a time.Duration
	side   atomic.Int32 // partition side, 0 or 1
	kind   string       // adversary kind, "" for an honest node
	warmed atomic.Bool  // see Network.warm
	links  map[*member]mocknet.Link
}

// AdversaryNodes are the nodes New set aside for one AdversarySpec.
type AdversaryNodes struct {
	Spec  AdversarySpec
	Nodes []int
}

// setupParallel is how many routing tables New refreshes at once.
const setupParallel = 8

// New builds the network of sc: sc.Nodes mocknet hosts with deterministic
// ed25519 identities (from sc.Seed), a node.Node in DHT server mode on
// each, with its own skewed view of the network's Clock. Then it fills the
// routing tables as sc.Setup says: by default as a converged network holds
// them (see SetupTables); with SetupJoin, kad-dht's own way, node after
// node. Setup runs with no link latency, so that it costs CPU time only;
// the scenario's latency model applies to every link at the end. ctx
// bounds the setup only: the network lives until Close. New starts
// everything or nothing.
func New(ctx context.Context, sc Scenario) (_ *Network, err error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	sc = sc.WithDefaults()
	mem0 := memUse()
	start := time.Now()
	nw := &Network{sc: sc, mn: mocknet.New(), byID: map[peer.ID]*member{},
		joinRand: rand.New(rand.NewChaCha8(Seed(sc.Seed, "join")))}
	defer func() {
		if err != nil {
			nw.Close()
		}
	}()
	keys := rand.NewChaCha8(Seed(sc.Seed, "keys"))
	place := rand.New(rand.NewChaCha8(Seed(sc.Seed, "place")))
	for i := range sc.Nodes {
		if _, err := nw.addNode(keys, place); err != nil {
			return nil, fmt.Errorf("sim: node %d: %w", i, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("sim: setup: %w", err)
		}
	}
	nw.rtt = nw.medianRTT()
	nw.chooseAdversaries()
	if nw.sc.Setup == SetupJoin {
		if err := nw.connect(ctx); err != nil {
			return nil, err
		}
		if err := nw.refreshAll(ctx); err != nil {
			return nil, err
		}
	} else if err := nw.fillTables(ctx); err != nil {
		return nil, err
	}
	nw.setLatency()
	nw.setup = time.Since(start)
	nw.mem0, nw.mem = mem0, memUse().perNode(mem0, sc.Nodes)
	return nw, nil
}

// Seed derives the seed of one stream of random choices from the
// scenario's seed.
func Seed(s uint64, purpose string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], s)
	return sha256.Sum256(append(b[:], purpose...))
}

// addNode adds a node with the next identity of keys, placed (region, clock
// skew) by place.
func (nw *Network) addNode(keys *rand.ChaCha8, place *rand.Rand) (*member, error) {
	var s [ed25519.SeedSize]byte
	_, _ = keys.Read(s[:])
	priv := ed25519.NewKeyFromSeed(s[:])
	sk, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	nw.mu.Lock()
	i := len(nw.members)
	nw.mu.Unlock()
	// mocknet never dials this address: it only names the node's /16.
	h, err := nw.mn.AddPeer(sk, memberAddr(i))
	if err != nil {
		return nil, err
	}
	m := &member{idx: i, host: h, meter: &meter{}, served: &meter{}, priv: priv, links: map[*member]mocknet.Link{}}
	if r := nw.sc.Regions; r != nil {
		m.region = pick(place, r.Weights, len(r.Names))
	}
	if sk := nw.sc.Skew; sk > 0 {
		m.skew.Store(place.Int64N(int64(2*sk)+1) - int64(sk))
	}
	now := func() time.Time { return nw.clock.Now().Add(time.Duration(m.skew.Load())) }
	m.node, err = node.New(node.Config{
		Host:         &meteredHost{Host: h, m: m.meter, nw: nw, self: m},
		NoRuntimeDir: true,
		SameMachine:  true, // every service listens on this machine's loopback
		Now:          now,
		DHT: dht.Config{
			RateNow:            now,
			Mode:               dht.ModeServer,
			Flat:               true, // mocknet's addresses are made up
			BucketSize:         nw.sc.BucketSize,
			DisableAutoRefresh: true,
			ValueRecords:       true, // the baseline's records (Scenario.Baseline)
			AlwaysLookup:       nw.sc.AlwaysLookup,
			ReuseFor:           nw.sc.ReuseFor,
			FindCache:          nw.sc.hotFindCache(),
			PathCache:          nw.sc.Hot != nil && nw.sc.Hot.PathCache,
		},
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	nw.mu.Lock()
	nw.members = append(nw.members, m)
	nw.byID[m.node.ID()] = m
	nw.mu.Unlock()
	return m, nil
}

// pick draws an index below n with the given weights (nil: uniform).
func pick(r *rand.Rand, weights []float64, n int) int {
	if weights == nil {
		return r.IntN(n)
	}
	total := 0.0
	for _, w := range weights {
		total += w
	}
	x := r.Float64() * total
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return n - 1
}

// chooseAdversaries sets aside the adversary nodes of the scenario.
func (nw *Network) chooseAdversaries() {
	if len(nw.sc.Adversaries) == 0 {
		return
	}
	perm := rand.New(rand.NewChaCha8(Seed(nw.sc.Seed, "adversaries"))).Perm(len(nw.members))
	for _, spec := range nw.sc.Adversaries {
		a := AdversaryNodes{Spec: spec}
		for _, i := range perm[:spec.Count] {
			nw.members[i].kind = spec.Kind
			a.Nodes = append(a.Nodes, i)
		}
		perm = perm[spec.Count:]
		slices.Sort(a.Nodes)
		nw.adversaries = append(nw.adversaries, a)
	}
}

// Adversaries returns the nodes set aside for each of the scenario's
// adversary specs, in the scenario's order.
func (nw *Network) Adversaries() []AdversaryNodes { return nw.adversaries }

// Honest reports whether node i is not an adversary.
func (nw *Network) Honest(i int) bool { return nw.member(i).kind == "" }

// connect joins the nodes one at a time (SetupJoin): each dials sc.Connect
// random earlier nodes and waits until one is in its routing table
// (identify must run first). kad-dht's own tests find that sequential
// connects fare much better.
func (nw *Network) connect(ctx context.Context) error {
	topo := rand.New(rand.NewChaCha8(Seed(nw.sc.Seed, "topology")))
	for i := 1; i < len(nw.members); i++ {
		m := nw.members[i]
		var to []*member
		for _, j := range topo.Perm(i)[:min(i, nw.sc.Connect)] {
			to = append(to, nw.members[j])
		}
		if err := nw.join(ctx, m, to); err != nil {
			return err
		}
	}
	return nil
}

// fillTables fills every routing table directly with the peers a
// converged network would hold, then connects every node to the peers in
// its table, setupParallel nodes at a time. For each bucket (common prefix
// length with the node's key) the table gets up to k nodes of that bucket,
// drawn from the seed. The tables are kad-dht's own, filled through its
// RoutingTable.TryAddPeer; each peer's address goes to the peerstore, as a
// lookup that found it would put it.
func (nw *Network) fillTables(ctx context.Context) error {
	n := len(nw.members)
	ids := make([]peer.ID, n)
	keys := make([]kb.ID, n)
	for i, m := range nw.members {
		ids[i] = m.node.ID()
		keys[i] = kb.ConvertPeerID(ids[i])
	}
	k := nw.sc.BucketSize
	r := rand.New(rand.NewChaCha8(Seed(nw.sc.Seed, "tables")))
	byCpl := make([][]int, 8*len(keys[0])+1)
	for i, m := range nw.members {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("sim: setup: %w", err)
		}
		for c := range byCpl {
			byCpl[c] = byCpl[c][:0]
		}
		for j := range n {
			if j != i {
				c := kb.CommonPrefixLen(keys[i], keys[j])
				byCpl[c] = append(byCpl[c], j)
			}
		}
		rt := m.node.DHT().Kad().RoutingTable()
		ps := m.host.Peerstore()
		for _, js := range byCpl {
			r.Shuffle(len(js), func(a, b int) { js[a], js[b] = js[b], js[a] })
			for _, j := range js[:min(k, len(js))] {
				ps.AddAddrs(ids[j], nw.members[j].host.Addrs(), peerstore.PermanentAddrTTL)
				if _, err := rt.TryAddPeer(ids[j], true, false); err != nil {
					return fmt.Errorf("sim: node %d: routing table: %w", i, err)
				}
			}
		}
	}
	return nw.eachMember(ctx, "setup", func(m *member) {
		for _, p := range m.node.DHT().Kad().RoutingTable().ListPeers() {
			if m.node.Host().Network().Connectedness(p) != network.Connected {
				_ = m.node.Host().Connect(ctx, peer.AddrInfo{ID: p})
			}
		}
	})
}

// warmLookups is how many lookups warm runs: kad-dht's network-size
// estimator gives no estimate before 5 completed lookups.
const warmLookups = 5

// warm runs, once per node, warmLookups lookups of random keys at once, as
// a long-running node's routing-table refreshes would have: the cell DHT's
// finds stop early only with kad-dht's estimate of the network's size,
// which needs them. Measure warms a finder before its first find; a node
// that joined (or a SetupJoin network) has refreshed its table already.
func (nw *Network) warm(ctx context.Context, m *member) {
	if !m.warmed.CompareAndSwap(false, true) || nw.sc.Setup == SetupJoin || m.idx >= nw.sc.Nodes {
		return
	}
	r := rand.New(rand.NewChaCha8(Seed(uint64(m.idx), "warm")))
	var wg sync.WaitGroup
	for range warmLookups {
		var b [32]byte
		for k := range 4 {
			binary.LittleEndian.PutUint64(b[8*k:], r.Uint64())
		}
		wg.Go(func() { _, _ = m.node.DHT().Kad().GetClosestPeers(ctx, string(b[:])) })
	}
	wg.Wait()
}

// join connects m to the nodes to and waits until its routing table holds
// a peer.
func (nw *Network) join(ctx context.Context, m *member, to []*member) error {
	for _, o := range to {
		if err := m.node.Host().Connect(ctx, peer.AddrInfo{ID: o.node.ID()}); err != nil {
			return fmt.Errorf("sim: connect node %d to node %d: %w", m.idx, o.idx, err)
		}
	}
	rt := m.node.DHT().Kad().RoutingTable()
	if err := poll.Until(ctx, time.Millisecond, func() bool { return rt.Size() > 0 }); err != nil {
		return fmt.Errorf("sim: node %d: routing table still empty: %w", m.idx, err)
	}
	return nil
}

// refreshAll refreshes every routing table, setupParallel at a time.
func (nw *Network) refreshAll(ctx context.Context) error {
	return nw.eachMember(ctx, "refresh routing tables", func(m *member) {
		// A refresh query that found nobody new is no failure of the
		// network: its error is not looked at.
		select {
		case <-m.node.DHT().Kad().RefreshRoutingTable():
		case <-ctx.Done():
		}
	})
}

// eachMember runs f for every member, setupParallel at a time, and waits.
// The error is ctx's, named after what, if it ended first.
func (nw *Network) eachMember(ctx context.Context, what string, f func(m *member)) error {
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, m := range nw.members {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("sim: %s: %w", what, ctx.Err())
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f(m)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim: %s: %w", what, err)
	}
	return nil
}

// link makes sure a has a mocknet link to the node with ID id, so that it
// can dial it: unless either is dead or the partition separates them. An
// ID outside the network is left alone (the dial then fails as it would).
func (nw *Network) link(a *member, id peer.ID) {
	nw.mu.RLock()
	b := nw.byID[id]
	nw.mu.RUnlock()
	if b == nil || b == a {
		return
	}
	nw.linkMu.Lock()
	defer nw.linkMu.Unlock()
	if _, ok := a.links[b]; ok || a.dead.Load() || b.dead.Load() || nw.separated(a, b) {
		return
	}
	l, err := nw.mn.LinkPeers(a.node.ID(), id)
	if err != nil {
		return
	}
	if nw.latencyOn.Load() {
		l.SetOptions(mocknet.LinkOptions{Latency: nw.latency(a, b)})
	}
	a.links[b], b.links[a] = l, l
}

// unlinkLocked removes the link between a and b; nw.linkMu is held.
func (nw *Network) unlinkLocked(a, b *member) {
	if l, ok := a.links[b]; ok {
		_ = nw.mn.Unlink(l)
		delete(a.links, b)
		delete(b.links, a)
	}
}

func (nw *Network) separated(a, b *member) bool {
	return nw.partitioned.Load() && a.side.Load() != b.side.Load()
}

// latency returns the one-way latency of a link between a and b.
func (nw *Network) latency(a, b *member) time.Duration {
	if r := nw.sc.Regions; r != nil {
		return time.Duration(r.OneWayMS[a.region][b.region] * float64(time.Millisecond))
	}
	return nw.sc.Latency
}

// pairLatency returns the one-way latency between the nodes with IDs a and
// b once the latency model applies (0 during setup, or for a peer outside
// the network).
func (nw *Network) pairLatency(a, b peer.ID) time.Duration {
	if !nw.latencyOn.Load() {
		return 0
	}
	nw.mu.RLock()
	ma, mb := nw.byID[a], nw.byID[b]
	nw.mu.RUnlock()
	if ma == nil || mb == nil {
		return 0
	}
	return nw.latency(ma, mb)
}

// maxLatency returns the longest one-way latency of the model.
func (nw *Network) maxLatency() time.Duration {
	if r := nw.sc.Regions; r != nil {
		var top float64
		for _, row := range r.OneWayMS {
			for _, v := range row {
				top = max(top, v)
			}
		}
		return time.Duration(top * float64(time.Millisecond))
	}
	return nw.sc.Latency
}

// setLatency applies the latency model to every link, from now on also to
// new ones.
func (nw *Network) setLatency() {
	nw.linkMu.Lock()
	defer nw.linkMu.Unlock()
	nw.latencyOn.Store(true)
	nw.mn.SetLinkDefaults(mocknet.LinkOptions{Latency: nw.sc.Latency})
	for _, a := range nw.members {
		for b, l := range a.links {
			if a.idx < b.idx {
				l.SetOptions(mocknet.LinkOptions{Latency: nw.latency(a, b)})
			}
		}
	}
}

// medianRTT returns twice the median one-way latency over all pairs of
// the scenario's nodes.
func (nw *Network) medianRTT() time.Duration {
	r := nw.sc.Regions
	if r == nil {
		return 2 * nw.sc.Latency
	}
	count := make([]float64, len(r.Names))
	for _, m := range nw.members {
		count[m.region]++
	}
	type bin struct{ ms, pairs float64 }
	var bins []bin
	total := 0.0
	for a := range count {
		for b := a; b < len(count); b++ {
			p := count[a] * count[b]
			if a == b {
				p = count[a] * (count[a] - 1) / 2
			}
			if p > 0 {
				bins = append(bins, bin{r.OneWayMS[a][b], p})
				total += p
			}
		}
	}
	if total == 0 {
		return time.Duration(2 * r.OneWayMS[0][0] * float64(time.Millisecond))
	}
	slices.SortFunc(bins, func(x, y bin) int {
		switch {
		case x.ms < y.ms:
			return -1
		case x.ms > y.ms:
			return 1
		}
		return 0
	})
	acc := 0.0
	for _, b := range bins {
		acc += b.pairs
		if acc >= total/2 {
			return time.Duration(2 * b.ms * float64(time.Millisecond))
		}
	}
	return 0
}

// RTT returns the round-trip time in which the reports count: 2×Latency,
// or with Regions twice the median one-way latency over all pairs of the
// scenario's nodes. It is 0 when links have no latency.
func (nw *Network) RTT() time.Duration { return nw.rtt }

// Region returns the index in Scenario.Regions.Names of node i's region
// (0 without regions).
func (nw *Network) Region(i int) int { return nw.member(i).region }

// Skew returns how far node i's clock is ahead of the network's Clock.
func (nw *Network) Skew(i int) time.Duration { return time.Duration(nw.member(i).skew.Load()) }

// SetSkew sets how far node i's clock is ahead of the network's Clock.
func (nw *Network) SetSkew(i int, d time.Duration) { nw.member(i).skew.Store(int64(d)) }

// Clock returns the network's simulated clock.
func (nw *Network) Clock() *Clock { return &nw.clock }

// Now returns node i's time: the network's clock plus the node's skew.
func (nw *Network) Now(i int) time.Time { return nw.clock.Now().Add(nw.Skew(i)) }

// Scenario returns the network's scenario, defaults applied.
func (nw *Network) Scenario() Scenario { return nw.sc }

// Len returns the number of nodes, dead ones included.
func (nw *Network) Len() int {
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	return len(nw.members)
}

func (nw *Network) member(i int) *member {
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	return nw.members[i]
}

// Node returns node i, dead or alive.
func (nw *Network) Node(i int) *node.Node { return nw.member(i).node }

// Alive reports whether node i has not been killed.
func (nw *Network) Alive(i int) bool { return !nw.member(i).dead.Load() }

// SetupSeconds returns how long New took, in seconds.
func (nw *Network) SetupSeconds() float64 { return nw.setup.Seconds() }

// Memory returns what each node cost after setup.
func (nw *Network) Memory() Memory { return nw.mem }

// live returns node i, or an error wrapping ErrDead.
func (nw *Network) live(i int) (*member, error) {
	m := nw.member(i)
	if m.dead.Load() {
		return nil, fmt.Errorf("%w: node %d", ErrDead, i)
	}
	return m, nil
}

// Kill kills node i abruptly, as a crash or a cut cable would: its links
// are cut and its host closed before anything else, so no withdrawal and no
// other message of it reaches anyone; then its node is closed to free its
// goroutines. The records it published stay at their storers until they
// expire. Killing a dead node does nothing.
func (nw *Network) Kill(i int) error {
	m := nw.member(i)
	if !m.dead.CompareAndSwap(false, true) {
		return nil
	}
	nw.linkMu.Lock()
	for o := range m.links {
		nw.unlinkLocked(m, o)
	}
	nw.linkMu.Unlock()
	err := m.host.Close()
	if cerr := m.node.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sim: kill node %d: %w", i, err)
	}
	return nil
}

// Join adds a new node to the network, as a new machine joining would: a
// new identity (the next of the network's join stream, drawn from the
// seed), a region and a clock skew drawn the same way; it dials
// Scenario.Connect random live honest nodes (on its side of a partition)
// and returns once one of them is in its routing table, with the new
// node's index. Its routing table is then refreshed in the background.
func (nw *Network) Join(ctx context.Context) (int, error) {
	nw.mu.Lock()
	if nw.closed {
		nw.mu.Unlock()
		return 0, errors.New("sim: join: network closed")
	}
	var key [32]byte
	for k := range 4 {
		binary.LittleEndian.PutUint64(key[8*k:], nw.joinRand.Uint64())
	}
	place := rand.New(rand.NewChaCha8(key))
	keys := rand.NewChaCha8(sha256.Sum256(key[:]))
	side := int32(0)
	if p := nw.sc.Partition; p != nil && nw.partitioned.Load() && nw.joinRand.Float64() < p.Fraction {
		side = 1
	}
	var cands []*member
	for _, m := range nw.members {
		if !m.dead.Load() && m.kind == "" && (nw.sc.Bootstrap == 0 || m.idx < nw.sc.Bootstrap) {
			cands = append(cands, m)
		}
	}
	nw.joinRand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	nw.mu.Unlock()

	m, err := nw.addNode(keys, place)
	if err != nil {
		return 0, fmt.Errorf("sim: join: %w", err)
	}
	m.side.Store(side)
	var to []*member
	for _, c := range cands {
		if len(to) == nw.sc.Connect {
			break
		}
		if !c.dead.Load() && !nw.separated(m, c) {
			to = append(to, c)
		}
	}
	if len(to) == 0 {
		return m.idx, fmt.Errorf("sim: join: node %d has nobody to dial", m.idx)
	}
	if err := nw.join(ctx, m, to); err != nil {
		return m.idx, err
	}
	nw.wg.Go(func() {
		select {
		case <-m.node.DHT().Kad().RefreshRoutingTable():
		case <-time.After(time.Minute):
		}
	})
	return m.idx, nil
}

// Split partitions the network: each node goes to side 1 with probability
// fraction (drawn from r), and every link between the sides is cut and
// every connection between them closed. Until Heal, no new link crosses.
func (nw *Network) Split(r *rand.Rand, fraction float64) {
	nw.mu.RLock()
	members := slices.Clone(nw.members)
	nw.mu.RUnlock()
	for _, m := range members {
		s := int32(0)
		if r.Float64() < fraction {
			s = 1
		}
		m.side.Store(s)
	}
	nw.partitioned.Store(true)
	type pair struct{ a, b *member }
	var cut []pair
	nw.linkMu.Lock()
	for _, a := range members {
		for b := range a.links {
			if a.idx < b.idx && nw.separated(a, b) {
				nw.unlinkLocked(a, b)
				cut = append(cut, pair{a, b})
			}
		}
	}
	nw.linkMu.Unlock()
	for _, p := range cut {
		_ = p.a.host.Network().ClosePeer(p.b.node.ID())
		_ = p.b.host.Network().ClosePeer(p.a.node.ID())
	}
}

// Heal ends the partition: links may cross again (they are made when nodes
// next talk).
func (nw *Network) Heal() { nw.partitioned.Store(false) }

// Side returns node i's side of the partition (0 or 1), and whether a
// partition is in force.
func (nw *Network) Side(i int) (int, bool) {
	return int(nw.member(i).side.Load()), nw.partitioned.Load()
}

// Reachable reports whether nodes i and j are on the same side of any
// partition in force.
func (nw *Network) Reachable(i, j int) bool { return !nw.separated(nw.member(i), nw.member(j)) }

// Find runs the full find of the cell name from node i, as `cellnode find`
// does: the DHT find, then a ping of every endpoint found.
func (nw *Network) Find(ctx context.Context, i int, name string) (*node.FindResult, error) {
	m, err := nw.live(i)
	if err != nil {
		return nil, err
	}
	return m.node.Find(ctx, name)
}

// Instance is one cell instance announced on a node by the real announcer
// (node.Announcer), with, unless the caller gave an endpoint, a TCP service
// of its own on the loopback interface that accepts and closes connections:
// it answers the announcer's health checks until StopService.
type Instance struct {
	Node      int     // index of the announcing node
	Name      string  // cell name
	Peer      peer.ID // the announcing node's peer ID
	Endpoint  string  // the announced endpoint
	Announcer *node.Announcer

	ln       net.Listener // nil when the caller gave the endpoint
	stopOnce sync.Once
}

// Announce starts the real announcer for a on node i. If a.Endpoint is
// empty, the instance gets a loopback TCP service of its own. It returns at
// once: WaitPublished waits for the first publish. The announcer stops when
// the node is killed or the network closed.
func (nw *Network) Announce(i int, a node.Announcement) (*Instance, error) {
	m, err := nw.live(i)
	if err != nil {
		return nil, err
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return nil, errors.New("sim: announce: network closed")
	}
	in := &Instance{Node: i, Name: a.Name, Peer: m.node.ID()}
	if a.Endpoint == "" {
		if in.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("sim: announce %s on node %d: service: %w", a.Name, i, err)
		}
		a.Endpoint = in.ln.Addr().String()
		nw.wg.Go(func() { serve(in.ln) })
	}
	in.Endpoint = a.Endpoint
	if in.Announcer, err = m.node.Announce(a); err != nil {
		in.StopService()
		return nil, fmt.Errorf("sim: announce %s on node %d: %w", a.Name, i, err)
	}
	nw.instances = append(nw.instances, in)
	return in, nil
}

// serve accepts connections on ln and closes them, until ln is closed.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// StopService stops the instance's own service: from the announcer's next
// health check on, it fails, and the announcer withdraws the instance. It
// does nothing for an instance whose endpoint the caller gave, and is safe
// to call more than once.
func (in *Instance) StopService() {
	in.stopOnce.Do(func() {
		if in.ln != nil {
			in.ln.Close()
		}
	})
}

// WaitPublished waits until the announcer has published a record without
// error, or ctx ends.
func (in *Instance) WaitPublished(ctx context.Context) error {
	err := poll.Until(ctx, 5*time.Millisecond, func() bool {
		s := in.Announcer.Status()
		return s.Announcing && s.Publishes > 0 && s.LastError == ""
	})
	if err != nil {
		s := in.Announcer.Status()
		return fmt.Errorf("sim: %s on node %d not published (%d publishes, last error %q): %w",
			in.Name, in.Node, s.Publishes, s.LastError, err)
	}
	return nil
}

// Close stops every service, closes every host (so nothing leaves any node
// from then on: no withdrawal is published), then closes every node. It is
// safe to call more than once.
func (nw *Network) Close() error {
	nw.closeOnce.Do(func() {
		nw.mu.Lock()
		nw.closed = true
		instances := nw.instances
		members := slices.Clone(nw.members)
		nw.mu.Unlock()
		for _, in := range instances {
			in.StopService()
		}
		var errs []error
		if err := nw.mn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sim: close mocknet: %w", err))
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, m := range members {
			wg.Go(func() {
				if err := m.node.Close(); err != nil && !m.dead.Load() {
					mu.Lock()
					errs = append(errs, fmt.Errorf("sim: close node %d: %w", i, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		nw.wg.Wait()
		nw.closeErr = errors.Join(errs...)
	})
	return nw.closeErr
}

// nextSeq returns a record sequence number above every one handed out
// before by this network: the time in microseconds, or one more than the
// last.
func (nw *Network) nextSeq(now time.Time) uint64 {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.lastSeq = max(nw.lastSeq+1, uint64(now.UnixMicro()))
	return nw.lastSeq
}

// Simulated addresses. mocknet never dials them, but the nodes group
// peers by them (see dht's replica diversity), so each honest node gets a
// public IPv4 /16 of its own, as nodes spread over the internet would, and
// every host of the attack scenarios' attacker one shared /16.
const (
	// AttackerNet is the /16 every attacker host's address is in.
	AttackerNet = "5.9.0.0/16"
	// memberNets is how many members get a /16 of their own, from
	// 11.0.0.0 up; the rest share the unroutable 100::/64.
	memberNets = 89 * 256
)

// memberAddr returns the address of the network's member i.
func memberAddr(i int) ma.Multiaddr {
	if i < memberNets {
		return ma.StringCast(fmt.Sprintf("/ip4/%d.%d.0.1/tcp/4242", 11+i/256, i%256))
	}
	return ma.StringCast(fmt.Sprintf("/ip6/100::%x/tcp/4242", i+1))
}

// HostAddr returns the address of the n-th host added to a network beside
// its nodes (by the attack suite): in
// AttackerNet for an attacker, else in a /16 of its own from 120.0.0.0 up.
func HostAddr(n int, attacker bool) ma.Multiaddr {
	if attacker {
		return ma.StringCast(fmt.Sprintf("/ip4/5.9.%d.%d/tcp/4242", n/256%256, n%256))
	}
	return ma.StringCast(fmt.Sprintf("/ip4/%d.%d.0.2/tcp/4242", 120+n/256%80, n%256))
}

// Mocknet returns the mocknet the network's hosts live on, for hosts added
// beside the nodes (the attack suite's adversaries and Sybils).
func (nw *Network) Mocknet() mocknet.Mocknet { return nw.mn }

// Key returns node i's identity key.
func (nw *Network) Key(i int) ed25519.PrivateKey { return nw.member(i).priv }
