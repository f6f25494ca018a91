package attack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/cellnode/cellnode/internal/wire"
	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/node"
	"github.com/fxamacker/cbor/v2"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// arena is one attack run: the honest network, and what the attack adds to
// it (adversary hosts, nodes that join later), closed together.
type arena struct {
	nw  *sim.Network
	as  AttackScenario
	rng *rand.Rand

	mu     sync.Mutex
	extras []*extra
	hosts  []host.Host      // adversary hosts without a node
	lone   map[peer.ID]bool // their peer IDs
	addrs  int              // addresses handed out to added hosts
}

// extra is a node that joined after setup: an honest node with a clock of
// its own, or a Sybil.
type extra struct {
	node  *node.Node
	host  host.Host
	priv  ed25519.PrivateKey
	clock *skewClock
}

func newArena(nw *sim.Network, as AttackScenario) *arena {
	return &arena{nw: nw, as: as, rng: rand.New(rand.NewChaCha8(sim.Seed(as.Network.Seed, "attack")))}
}

// close closes what the arena added; the caller closes the network.
func (a *arena) close() {
	a.mu.Lock()
	extras, hosts := a.extras, a.hosts
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range extras {
		wg.Go(func() { _ = e.host.Close(); _ = e.node.Close() })
	}
	for _, h := range hosts {
		wg.Go(func() { _ = h.Close() })
	}
	wg.Wait()
	_ = a.nw.Close()
}

// key derives a deterministic ed25519 key from the seed and purpose.
func (a *arena) key(purpose string) ed25519.PrivateKey {
	s := sim.Seed(a.as.Network.Seed, "attack-key/"+purpose)
	return ed25519.NewKeyFromSeed(s[:ed25519.SeedSize])
}

// honest returns the indices of the live nodes of the network.
func (a *arena) honest() []int {
	var out []int
	for i := range a.nw.Len() {
		if a.nw.Alive(i) {
			out = append(out, i)
		}
	}
	return out
}

// honestIDs returns the peer IDs of the live nodes of the network.
func (a *arena) honestIDs() []peer.ID {
	var out []peer.ID
	for _, i := range a.honest() {
		out = append(out, a.nw.Node(i).ID())
	}
	return out
}

// pick returns n distinct live nodes, drawn from the arena's seed, none in
// avoid.
func (a *arena) pick(n int, avoid ...int) []int {
	var pool []int
	for _, i := range a.honest() {
		if !slices.Contains(avoid, i) {
			pool = append(pool, i)
		}
	}
	a.rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	return pool[:min(n, len(pool))]
}

// addHost adds a host with key priv to the mocknet, linked to every host
// already there but the adversary hosts without a node (which talk to the
// nodes only, so that a thousand of them cost a thousand links each, not a
// million in all). An attacker's host gets an address in the attacker's
// one /16 (sim.AttackerNet); any other a /16 of its own.
func (a *arena) addHost(priv ed25519.PrivateKey, attacker bool) (host.Host, error) {
	sk, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.addrs++
	n := a.addrs
	lone := maps.Clone(a.lone)
	a.mu.Unlock()
	h, err := a.nw.Mocknet().AddPeer(sk, sim.HostAddr(n, attacker))
	if err != nil {
		return nil, err
	}
	for _, o := range a.nw.Mocknet().Peers() {
		if o != h.ID() && !lone[o] {
			if _, err := a.nw.Mocknet().LinkPeers(h.ID(), o); err != nil {
				h.Close()
				return nil, err
			}
		}
	}
	return h, nil
}

// adversary adds a host without a node, linked to every node, and
// remembers to close it. It speaks the protocols with bytes of its own.
func (a *arena) adversary(priv ed25519.PrivateKey) (host.Host, error) {
	h, err := a.addHost(priv, true)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if a.lone == nil {
		a.lone = map[peer.ID]bool{}
	}
	a.lone[h.ID()] = true
	a.hosts = append(a.hosts, h)
	a.mu.Unlock()
	return h, nil
}

// join adds a node with key priv and its own clock (a DHT server), dials
// every live node of the network and refreshes its routing table, so that
// it is in the routing tables of the others and lookups find it.
func (a *arena) join(ctx context.Context, priv ed25519.PrivateKey) (*extra, error) {
	return a.joinVia(ctx, priv, nil, dht.ModeServer, false)
}

// joinVia is join dialling only the peers in dial (nil: every live node),
// as a DHT server or client, from the attacker's network or not.
func (a *arena) joinVia(ctx context.Context, priv ed25519.PrivateKey, dial []peer.ID, mode dht.Mode, attacker bool) (*extra, error) {
	h, err := a.addHost(priv, attacker)
	if err != nil {
		return nil, err
	}
	e := &extra{host: h, priv: priv, clock: &skewClock{}}
	e.node, err = node.New(node.Config{
		Host:         h,
		NoRuntimeDir: true,
		Now:          e.clock.Now,
		DHT:          dht.Config{Mode: mode, Flat: true, BucketSize: a.as.Network.BucketSize, DisableAutoRefresh: true},
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	a.mu.Lock()
	a.extras = append(a.extras, e)
	a.mu.Unlock()
	if dial == nil {
		dial = a.honestIDs()
	}
	for _, p := range dial {
		if err := h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
			return nil, fmt.Errorf("join: connect to %s: %w", p, err)
		}
	}
	rt := e.node.DHT().Kad().RoutingTable()
	if err := poll.Until(ctx, time.Millisecond, func() bool { return rt.Size() > 0 }); err != nil {
		return nil, fmt.Errorf("join: routing table still empty: %w", err)
	}
	select {
	case <-e.node.DHT().Kad().RefreshRoutingTable():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e, nil
}

// skewClock is time.Now plus a settable offset.
type skewClock struct{ off atomic.Int64 }

func (c *skewClock) Now() time.Time        { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *skewClock) Set(d time.Duration)   { c.off.Store(int64(d)) }
func (c *skewClock) Offset() time.Duration { return time.Duration(c.off.Load()) }

// realCell is the attacked cell: its publisher key and its real instances.
type realCell struct {
	name    string
	pubPriv ed25519.PrivateKey
	pub     ed25519.PublicKey
	ins     []*sim.Instance
}

// delegate signs a delegation of name to the node key nodePub, valid from
// an hour ago for a week.
func delegate(pubPriv ed25519.PrivateKey, name string, nodePub ed25519.PublicKey, now time.Time) (*record.Delegation, error) {
	return record.SignDelegation(pubPriv, record.Delegation{Name: name, Node: nodePub, Issued: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour)})
}

// startCell starts the real announcer of name, delegated by pubPriv, on
// each of nodes, and waits until each has published.
func (a *arena) startCell(ctx context.Context, name string, pubPriv ed25519.PrivateKey, nodes []int) (*realCell, error) {
	c := &realCell{name: name, pubPriv: pubPriv, pub: pubPriv.Public().(ed25519.PublicKey)}
	for _, i := range nodes {
		d, err := delegate(pubPriv, name, a.nw.Key(i).Public().(ed25519.PublicKey), time.Now())
		if err != nil {
			return nil, err
		}
		in, err := a.nw.Announce(i, node.Announcement{Name: name, Delegation: d,
			CheckInterval: 100 * time.Millisecond, Republish: time.Duration(a.as.Republish)})
		if err != nil {
			return nil, err
		}
		c.ins = append(c.ins, in)
	}
	for _, in := range c.ins {
		if err := in.WaitPublished(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// waitRepublished waits until every instance of c has published n more
// times than when it was called (records then sit at the current closest
// peers).
func (c *realCell) waitRepublished(ctx context.Context, n int) error {
	base := make([]int, len(c.ins))
	for i, in := range c.ins {
		base[i] = in.Announcer.Status().Publishes
	}
	return poll.Until(ctx, 10*time.Millisecond, func() bool {
		for i, in := range c.ins {
			if s := in.Announcer.Status(); s.Announcing && s.Publishes < base[i]+n {
				return false
			}
		}
		return true
	})
}

// live returns the peers of the instances of c that are announcing.
func (c *realCell) live() map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, in := range c.ins {
		if in.Announcer.Status().Announcing {
			m[in.Peer] = true
		}
	}
	return m
}

// findOutcome is one find judged against the real instances.
type findOutcome struct {
	ok    bool // exactly the wanted instances, nothing else
	lost  int  // wanted instances missing
	shown int  // instances returned that are not wanted ones
	dur   time.Duration
	res   *node.FindResult
	err   error
}

// find runs a find of name from n, trusting pubs (none: nothing pinned),
// and judges it against want.
func find(ctx context.Context, n *node.Node, name string, pubs []ed25519.PublicKey, want map[peer.ID]bool) findOutcome {
	ctx, cancel := context.WithTimeout(ctx, sim.OpTimeout)
	defer cancel()
	start := time.Now()
	res, err := n.FindWith(ctx, name, node.FindOptions{Publishers: pubs})
	o := findOutcome{dur: time.Since(start), res: res, err: err}
	got := map[peer.ID]bool{}
	if res != nil {
		for _, in := range res.Instances {
			id, _ := peer.Decode(in.Peer)
			got[id] = true
			if !want[id] {
				o.shown++
			}
		}
	}
	for p := range want {
		if !got[p] {
			o.lost++
		}
	}
	o.ok = err == nil && o.lost == 0 && o.shown == 0
	return o
}

// findRow runs finds from random live nodes and sums them into a row.
func (a *arena) findRow(ctx context.Context, row *AttackRow, name string, pubs []ed25519.PublicKey, want map[peer.ID]bool, finds int) []findOutcome {
	var outs []findOutcome
	var durs []time.Duration
	for _, i := range a.pickFinders(finds) {
		o := find(ctx, a.nw.Node(i), name, pubs, want)
		outs = append(outs, o)
		row.Finds++
		if o.ok {
			row.FindsOK++
		}
		row.Lost += o.lost
		row.Shown += o.shown
		durs = append(durs, o.dur)
	}
	row.Millis = sim.LatencyOf(durs, 0).P50MS
	return outs
}

// pickFinders draws n finders (with repeats) among the live nodes.
func (a *arena) pickFinders(n int) []int {
	live := a.honest()
	out := make([]int, n)
	for i := range out {
		out[i] = live[a.rng.IntN(len(live))]
	}
	return out
}

// counters sums the DHT counters of nodes.
func counters(nodes []*node.Node) map[string]uint64 {
	out := map[string]uint64{}
	for _, n := range nodes {
		for k, v := range n.DHT().Counters() {
			out[k] += v
		}
	}
	return out
}

// honestNodes returns the live nodes of the network.
func (a *arena) honestNodes() []*node.Node {
	var out []*node.Node
	for _, i := range a.honest() {
		out = append(out, a.nw.Node(i))
	}
	return out
}

// rejections returns the storers' rejections counted between two counter
// snapshots, by reason ("store_rejected_bad_signature" gives
// "bad_signature"), and the requests refused for the rate limit as
// "rate_limited".
func rejections(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			switch {
			case strings.HasPrefix(k, "store_rejected_"):
				out[strings.TrimPrefix(k, "store_rejected_")] += d
			case k == "rate_limited":
				out[k] += d
			}
		}
	}
	return out
}

// closest returns the n of ids closest to the DHT key, closest first.
func closest(key string, ids []peer.ID, n int) []peer.ID {
	s := kb.SortClosestPeers(slices.Clone(ids), kb.ConvertKey(key))
	return s[:min(n, len(s))]
}

// cpl returns the length of the common prefix of the kbucket IDs of p and
// of the DHT key.
func cpl(key string, p peer.ID) int {
	return kb.CommonPrefixLen(kb.ConvertPeerID(p), kb.ConvertKey(key))
}

// maxCPL returns the longest common prefix any of ids has with key.
func maxCPL(key string, ids []peer.ID) int {
	m := 0
	for _, p := range ids {
		m = max(m, cpl(key, p))
	}
	return m
}

// grind draws ed25519 keys from rng until one's peer ID shares at least
// minCPL leading bits with the DHT key (in kbucket space, as kad-dht
// measures distance). It returns the key and the number of keys tried.
func grind(rng io.Reader, key string, minCPL int) (ed25519.PrivateKey, int) {
	target := kb.ConvertKey(key)
	var s [ed25519.SeedSize]byte
	for tries := 1; ; tries++ {
		_, _ = rng.Read(s[:])
		priv := ed25519.NewKeyFromSeed(s[:])
		id, err := peerIDOf(priv.Public().(ed25519.PublicKey))
		if err == nil && kb.CommonPrefixLen(kb.ConvertPeerID(id), target) >= minCPL {
			return priv, tries
		}
	}
}

func peerIDOf(pub ed25519.PublicKey) (peer.ID, error) {
	pk, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pk)
}

func mustPeerID(pub ed25519.PublicKey) peer.ID {
	id, err := peerIDOf(pub)
	if err != nil {
		panic(err)
	}
	return id
}

// The record and delegation formats of docs/records.md, reproduced so that
// the adversary can build records that record.Sign refuses to make.
type wireBody struct {
	Version   uint64   `cbor:"0,keyasint"`
	Name      string   `cbor:"1,keyasint"`
	Peer      []byte   `cbor:"2,keyasint"`
	Key       []byte   `cbor:"3,keyasint"`
	Endpoints []string `cbor:"4,keyasint"`
	Region    string   `cbor:"5,keyasint,omitempty"`
	Manifest  []byte   `cbor:"6,keyasint,omitempty"`
	Seq       uint64   `cbor:"7,keyasint"`
	Issued    int64    `cbor:"8,keyasint"`
	Expires   int64    `cbor:"9,keyasint"`
	Withdrawn bool     `cbor:"10,keyasint,omitempty"`
	Delegate  []byte   `cbor:"11,keyasint,omitempty"`
}

type wireEnvelope struct {
	Body []byte `cbor:"1,keyasint"`
	Sig  []byte `cbor:"2,keyasint"`
}

type wireDelegation struct {
	Version   uint64 `cbor:"0,keyasint"`
	Name      string `cbor:"1,keyasint"`
	Node      []byte `cbor:"2,keyasint"`
	Publisher []byte `cbor:"3,keyasint"`
	Issued    int64  `cbor:"4,keyasint"`
	NotAfter  int64  `cbor:"5,keyasint"`
}

// openBody decodes the envelope and body of record bytes.
func openBody(raw []byte) (wireBody, wireEnvelope, error) {
	var env wireEnvelope
	var b wireBody
	if err := cbor.Unmarshal(raw, &env); err != nil {
		return b, env, err
	}
	err := cbor.Unmarshal(env.Body, &b)
	return b, env, err
}

// sealBody encodes b and signs it with signer as a record signature; a nil
// signer keeps sig.
func sealBody(b wireBody, signer ed25519.PrivateKey, sig []byte) []byte {
	body, err := wire.Enc.Marshal(b)
	if err != nil {
		panic(err)
	}
	if signer != nil {
		sig = ed25519.Sign(signer, record.SignedMessage(record.RecordDomain, body))
	}
	raw, err := wire.Enc.Marshal(wireEnvelope{Body: body, Sig: sig})
	if err != nil {
		panic(err)
	}
	return raw
}

// sealDelegation encodes d and signs it with signer as a delegation.
func sealDelegation(d wireDelegation, signer ed25519.PrivateKey) []byte {
	body, err := wire.Enc.Marshal(d)
	if err != nil {
		panic(err)
	}
	sig := ed25519.Sign(signer, record.SignedMessage(record.DelegationDomain, body))
	raw, err := wire.Enc.Marshal(wireEnvelope{Body: body, Sig: sig})
	if err != nil {
		panic(err)
	}
	return raw
}

// recordBody is the body of a record of name by the node key priv,
// issued at now for 60 s.
func recordBody(priv ed25519.PrivateKey, name string, seq uint64, now time.Time, endpoint string) wireBody {
	pub := priv.Public().(ed25519.PublicKey)
	return wireBody{Version: record.FormatVersion, Name: name, Peer: []byte(mustPeerID(pub)), Key: pub,
		Endpoints: []string{endpoint}, Seq: seq, Issued: now.UnixMilli(), Expires: now.Add(record.MaxLifetime).UnixMilli()}
}

// signRecord signs a valid record of name with priv, delegated by d (nil
// for an open record).
func signRecord(priv ed25519.PrivateKey, name string, seq uint64, now time.Time, endpoint string, d *record.Delegation) (*record.Record, error) {
	return record.Sign(priv, record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey),
		Endpoints: []string{endpoint}, Seq: seq, Issued: now, Expires: now.Add(record.MaxLifetime), Delegation: d})
}

// rawCall sends one request on the instances protocol from h to p and
// returns the response. A refusal is a response with Error set, not an
// error.
func rawCall(ctx context.Context, h host.Host, p peer.ID, req wire.Request) (*wire.Response, error) {
	msg, err := wire.Enc.Marshal(req)
	if err != nil {
		return nil, err
	}
	return rawSend(ctx, h, p, msg)
}

// rawSend sends msg, framed, as the request of one stream from h to p.
func rawSend(ctx context.Context, h host.Host, p peer.ID, msg []byte) (*wire.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, p, dht.ProtocolID)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := msgio.NewVarintWriter(s).WriteMsg(msg); err != nil {
		_ = s.Reset()
		return nil, err
	}
	_ = s.CloseWrite()
	b, err := msgio.NewVarintReaderSize(s, 4<<20).ReadMsg()
	if err != nil {
		_ = s.Reset()
		return nil, err
	}
	var resp wire.Response
	if err := cbor.Unmarshal(b, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// putResult counts the answers to PUTs.
type putResult struct {
	mu              sync.Mutex
	sent, ok, fail  int
	errs            map[string]int // refusals by the storer's error text (trimmed)
	transportErrors int
}

func (r *putResult) add(resp *wire.Response, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	switch {
	case err != nil:
		r.transportErrors++
		r.fail++
		return false
	case resp.Error != "":
		r.fail++
		if r.errs == nil {
			r.errs = map[string]int{}
		}
		msg, _, _ := strings.Cut(resp.Error, ":")
		r.errs[msg]++
		return false
	}
	r.ok++
	return true
}

// putAll sends a PUT of raw for name (into the set of pub, nil for the
// name's own set) from h to each of targets, in parallel, and counts the
// answers in res.
func putAll(ctx context.Context, h host.Host, targets []peer.ID, name string, pub ed25519.PublicKey, raw []byte, res *putResult) {
	var wg sync.WaitGroup
	for _, p := range targets {
		wg.Go(func() {
			resp, err := rawCall(ctx, h, p, wire.Request{Op: wire.OpPut, Name: name, Record: raw, Publisher: pub})
			res.add(resp, err)
		})
	}
	wg.Wait()
}

// getAll GETs the set of name (pub nil) or of a publisher's records from
// each of targets and returns every record received.
func getAll(ctx context.Context, h host.Host, targets []peer.ID, name string, pub ed25519.PublicKey) [][]byte {
	var mu sync.Mutex
	var out [][]byte
	var wg sync.WaitGroup
	for _, p := range targets {
		wg.Go(func() {
			resp, err := rawCall(ctx, h, p, wire.Request{Op: wire.OpGet, Name: name, Publisher: pub})
			if err != nil || resp.Error != "" {
				return
			}
			mu.Lock()
			out = append(out, resp.Records...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}
