package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/dual"
	kb "github.com/libp2p/go-libp2p-kbucket"
	p2precord "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/time/rate"
)

// Mode says whether a node serves the DHT.
type Mode int

const (
	// ModeAuto serves the WAN DHT once libp2p finds the node publicly
	// reachable (a client until then) and always serves the LAN DHT.
	ModeAuto Mode = iota
	// ModeServer always serves both DHTs.
	ModeServer
	// ModeClient serves neither: for one-shot commands, which should not
	// enter other peers' routing tables.
	ModeClient
)

// ProtocolPrefix is the kad-dht protocol prefix of the cell network. It keeps
// cell nodes off the public IPFS DHT.
const ProtocolPrefix = "/cell"

// Config configures a DHT. The zero value works.
type Config struct {
	// Mode is the DHT mode; the zero value is ModeAuto.
	Mode Mode
	// Flat runs one kad-dht that takes every peer into its routing table
	// whatever its addresses, instead of the WAN DHT (peers with public
	// addresses) beside the LAN DHT (peers reached over private or
	// loopback addresses). For networks whose addresses mean nothing, such
	// as mocknet's in the simulator and in tests.
	Flat bool
	// DialTimeout bounds the dial of one peer during a lookup or a request
	// of the instances protocol, so that a peer that is gone costs a short
	// wait; 0 means 2 s. Once the routing tables' peers have latencies, the
	// bound is 6 times their median, at least 300 ms (see dialBudget).
	DialTimeout time.Duration
	// BootstrapPeers are handed to kad-dht, which dials them whenever its
	// routing table runs low. Nil means none.
	BootstrapPeers []peer.AddrInfo
	// BucketSize is kad-dht's k; 0 means 20.
	BucketSize int
	// Replication is how many of the closest peers a record is stored at;
	// 0 means BucketSize.
	Replication int
	// RequestTimeout bounds one request of the instances protocol; 0 means 5 s.
	RequestTimeout time.Duration
	// DisableAutoRefresh turns off kad-dht's periodic routing-table refresh
	// (the simulator refreshes explicitly).
	DisableAutoRefresh bool
	// Store bounds the local record store.
	Store StoreConfig
	// PeerRate is how many instances-protocol requests per second one
	// remote peer may make of this node (a token bucket with a burst of
	// 5 s worth); 0 means 20. Requests over it are refused and counted.
	PeerRate float64
	// RateNow is the clock of the per-peer rate limit; nil means
	// time.Now. The simulator gives its nodes the simulated clock, so that
	// what the limit lets through depends on that clock, not on how fast a
	// loaded machine runs the requests.
	RateNow func() time.Time
	// AlwaysLookup makes every publish look up the closest peers afresh
	// instead of reusing the storers that took the previous one for
	// storersTTL (to measure what the reuse saves).
	AlwaysLookup bool
	// ReuseFor is how long a publish reuses the storers that took the
	// previous one before it checks them again by asking two of them for
	// their closest peers (see reuse); 0 means storersTTL (2 min). The
	// check is what brings a republish to peers that came back after a
	// partition: the attack suite, whose announcers republish every
	// second, sets it to the same 6 republish intervals.
	ReuseFor time.Duration
	// Logger receives debug logs; nil means discard.
	Logger *slog.Logger
	// ValueRecords makes the node accept kad-dht value records (PutValue)
	// of live instance records under /cell/<org>/<name>/<peer>, outside the
	// store's quotas (see Validator). Only the simulator sets it, for the
	// baseline it measures against (design 2 of DESIGN.md); a node that
	// leaves it false refuses every value record under /cell/.
	ValueRecords bool
	// FindCache is how long a find is answered from the records the
	// node's last find of the same name verified, on the finder's clock
	// (see findcache.go); 0 means never. Each record still ends with its
	// own life.
	FindCache time.Duration
	// PathCache makes a find whose answers agreed store the set at the
	// closest peer it asked that lacked part of it (see findcache.go).
	PathCache bool
	// PeerGone, when set, reports whether p's process is known to have
	// exited (the node's host: every TCP port of p on the IPs it is
	// connected on refuses a connect). A request, or a lookup's query,
	// still unanswered after the peer's probe delay (probeDelay) is checked
	// once with it, and a peer that is gone is forgotten at once (its
	// connections closed, which ends the request) instead of after its
	// request budget. It must return when ctx ends.
	PeerGone func(ctx context.Context, p peer.ID) bool
	// PeerLeft, when set, reports whether p's process at the address from
	// (the remote address of a connection to p that has just closed) is
	// known to have exited (the node's host: every TCP port of p on that
	// IP refuses a connect). A peer of the routing tables whose last
	// connection closed is checked with it, and dropped from the tables
	// when it is gone (departed.go). It must return when ctx ends.
	PeerLeft func(ctx context.Context, p peer.ID, from ma.Multiaddr) bool
}

// Node is a node's view of the cell namespace: two kad-dht instances with
// the cell validator, as kubo runs them (kad-dht's dual package), the local
// set-valued store (served when the node is a DHT server) and the
// instances protocol. The WAN DHT (protocol /cell/kad/1.0.0) holds peers
// with public addresses and serves once AutoNAT finds the node publicly
// reachable; the LAN DHT (/cell/lan/kad/1.0.0) holds peers reached over
// private or loopback addresses, and every node but a client serves it,
// so that on a LAN, a private data-centre network or one machine every
// node stores and answers and none is special. Publish and find work on
// both, in parallel, wherever a table holds peers. It is safe for
// concurrent use.
type Node struct {
	cfg    Config
	host   host.Host
	kad    *kaddht.IpfsDHT // the WAN DHT (the only one when Flat)
	dual   *dual.DHT       // nil when Flat
	spaces []*space        // the WAN DHT, then the LAN DHT
	store  *Store
	log    *slog.Logger
	count  Counters

	limMu    sync.Mutex
	limiters map[peer.ID]*rate.Limiter // per remote peer, for the instances protocol
	fwd      *forwarding               // as a forwarder of newcomers' first PUTs
	left     *departures               // Config.PeerLeft's checks; nil without it

	// oldStorer, in tests, makes the node answer GETs as a storer that
	// predates Request.MoreShards: shard asked alone.
	oldStorer bool

	results resultCache // Config.FindCache
	shards  shardMemo   // shard counts of recent publishes and finds, by name

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// New starts a DHT on h and registers the instances protocol on it. It
// starts everything or nothing; Close stops what it started (not h).
func New(h host.Host, cfg Config) (*Node, error) {
	if cfg.BucketSize <= 0 {
		cfg.BucketSize = 20
	}
	if cfg.Replication <= 0 {
		cfg.Replication = cfg.BucketSize
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.PeerRate <= 0 {
		cfg.PeerRate = 20
	}
	if cfg.Store.Now == nil {
		cfg.Store.Now = time.Now
	}
	if cfg.RateNow == nil {
		cfg.RateNow = time.Now
	}
	if cfg.ReuseFor <= 0 {
		cfg.ReuseFor = storersTTL
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Node{
		cfg: cfg, host: h, store: NewStore(cfg.Store), log: log,
		count: newCounters(), done: make(chan struct{}), limiters: map[peer.ID]*rate.Limiter{},
		fwd: newForwarding(),
	}
	if cfg.Flat {
		kad, err := kaddht.New(kadHost{h}, kadOptions(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("dht: start kad-dht: %w", err)
		}
		d.kad = kad
		d.spaces = []*space{newSpace("wan", ProtocolPrefix+"/kad/1.0.0", kad, nil, cfg.ReuseFor)}
	} else {
		dd, err := dual.New(kadHost{h}, dualOptions(cfg)...)
		if err != nil {
			return nil, fmt.Errorf("dht: start kad-dht: %w", err)
		}
		d.dual, d.kad = dd, dd.WAN
		d.spaces = []*space{
			newSpace("wan", ProtocolPrefix+"/kad/1.0.0", dd.WAN, kaddht.PublicRoutingTableFilter, cfg.ReuseFor),
			newSpace("lan", ProtocolPrefix+dual.LanExtension+"/kad/1.0.0", dd.LAN, kaddht.PrivateRoutingTableFilter, cfg.ReuseFor),
		}
	}
	if cfg.Mode != ModeClient { // a client stores nothing to hand on
		// The bus blocks identify's emitter while a subscriber's buffer
		// is full: room for a burst of connections (a node starting, a
		// refresh) while handoffLoop works out a batch.
		sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted), eventbus.BufSize(256))
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("dht: watch for newcomers: %w", err)
		}
		d.wg.Add(1)
		go d.handoffLoop(sub)
	}
	h.SetStreamHandler(ProtocolID, d.handle)
	if cfg.PeerLeft != nil {
		d.watchDepartures()
	}
	d.wg.Add(1)
	go d.gcLoop()
	return d, nil
}

// kadOptions is the one place where Config becomes kad-dht options.
func kadOptions(cfg Config) []kaddht.Option {
	mode := map[Mode]kaddht.ModeOpt{ModeAuto: kaddht.ModeAuto, ModeServer: kaddht.ModeServer, ModeClient: kaddht.ModeClient}[cfg.Mode]
	opts := []kaddht.Option{
		kaddht.ProtocolPrefix(ProtocolPrefix),
		kaddht.Validator(p2precord.NamespacedValidator{"cell": valueValidator(cfg)}),
		kaddht.Mode(mode),
		kaddht.BucketSize(cfg.BucketSize),
		// kad-dht serves value records by age only; our 60 s expiry is
		// enforced by the validator and by finders. Keep them no longer.
		kaddht.MaxRecordAge(2 * time.Minute),
		kaddht.ValueGCInterval(time.Minute),
	}
	if len(cfg.BootstrapPeers) > 0 {
		opts = append(opts, kaddht.BootstrapPeers(cfg.BootstrapPeers...))
	}
	if cfg.DisableAutoRefresh {
		opts = append(opts, kaddht.DisableAutoRefresh())
	}
	return opts
}

// dualOptions are kadOptions for the WAN and LAN DHTs of kad-dht's dual
// package, with two changes to its LAN defaults: the LAN DHT serves unless
// the node is a client (dual leaves it in auto mode, where a node on a LAN
// never serves), and it keeps the loopback addresses its lookups learn of
// a peer that has no other address, so that nodes listening on loopback
// alone find each other (dual drops every loopback address; see
// lanAddrs).
func dualOptions(cfg Config) []dual.Option {
	lanMode := kaddht.ModeServer
	if cfg.Mode == ModeClient {
		lanMode = kaddht.ModeClient
	}
	return []dual.Option{
		dual.DHTOption(kadOptions(cfg)...),
		dual.LanDHTOption(
			// Again: ProtocolPrefix (in kadOptions, applied after dual's
			// own options) replaced the extension dual had added.
			kaddht.ProtocolExtension(dual.LanExtension),
			kaddht.Mode(lanMode),
			kaddht.AddressFilter(lanAddrs),
		),
	}
}

// lanAddrs filters the addresses the LAN DHT's lookups learn of a peer: a
// peer's loopback addresses are dropped when it has others. A loopback
// address learnt from another node is most often that node's machine's,
// not ours, and a dial to it does not fail at once: nothing answers a QUIC
// handshake sent to a closed local UDP port, and libp2p dials a peer's
// addresses one after the other, 30 ms apart on private networks, IPv6
// (::1) first, so each new connection to a peer on another machine waited
// 30 to 60 ms on its loopback addresses. A peer on this machine that also
// listens on another address is reached there; one that listens on
// loopback alone keeps its loopback addresses.
func lanAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return addrs
	}
	return out
}

// space is one of a node's kad-dht instances, with the closest peers of
// its recent finds.
type space struct {
	name    string      // "wan" or "lan"
	proto   protocol.ID // its kad protocol, which the host serves while the DHT does
	kad     *kaddht.IpfsDHT
	filter  func(dht any, p peer.ID) bool // the routing-table filter dual gave kad (nil: none), for Seed
	closest closestCache                  // the closest peers of recent finds, by key
	storers closestCache                  // the closest peers that took this node's last publish, by key (ttl lookupTTL)
	holders closestCache                  // every peer that took it, early PUTs included (for withdrawals)
	checked closestCache                  // storer sets checked by asking their members (ttl Config.ReuseFor; see reuse)
}

// storersTTL is the default of Config.ReuseFor: how long a publish reuses
// the storers that took the previous one without asking anything: a
// republish (every 20 s) then costs one PUT per storer instead of a
// lookup and the PUTs. At least this often, and whenever a remembered
// storer refuses or fails, it asks two of them for their closest peers
// first, so that peers that joined closer to the key, or came back after
// a partition, get the record (see reuse, lookupTTL).
const storersTTL = 2 * time.Minute

// minReuse is how many remembered storers a publish needs to skip the
// lookup; with fewer (a small or new network) it looks up every time.
const minReuse = 3

func newSpace(name string, proto protocol.ID, kad *kaddht.IpfsDHT, filter func(any, peer.ID) bool, reuseFor time.Duration) *space {
	return &space{name: name, proto: proto, kad: kad, filter: filter, storers: closestCache{ttl: lookupTTL}, holders: closestCache{ttl: lookupTTL}, checked: closestCache{ttl: reuseFor}}
}

// serving reports whether the node currently serves sp: kad-dht's Mode
// returns the mode it was configured with (auto, say), so ask the host
// whether the DHT's protocol handler is set.
func (d *Node) serving(sp *space) bool {
	return slices.Contains(d.host.Mux().Protocols(), sp.proto)
}

// active returns the spaces whose routing tables hold a peer: the ones a
// publish or a find can use.
func (d *Node) active() []*space {
	var out []*space
	for _, sp := range d.spaces {
		if sp.kad.RoutingTable().Size() > 0 {
			out = append(out, sp)
		}
	}
	return out
}

// Peers returns the peers of every routing table, each once.
func (d *Node) Peers() []peer.ID {
	var out []peer.ID
	seen := map[peer.ID]bool{}
	for _, sp := range d.spaces {
		for _, p := range sp.kad.RoutingTable().ListPeers() {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// Seed adds connected peers (the bootstrap peers just dialled) to every
// routing table that would take them, and returns how many tables took
// one. kad-dht adds a peer once identify shows it speaks the table's
// protocol and then a FIND_NODE to it has answered (its lookup check): two
// round trips after the handshake that a node which has just dialled its
// bootstrap peers would wait before its first lookup or publish could
// start. Seed applies the same rules as kad-dht but for the check, and
// does not wait for identify: a peer passes the table's filter (dual's:
// public addresses for the WAN table, private ones for the LAN table) and,
// once identified, speaks the table's protocol. A peer taken in before
// identify said what it speaks is dropped from the table if identify then
// shows it does not (within seedProof; a warning is logged), or like any
// other peer at its first failed query.
func (d *Node) Seed(peers []peer.ID) int {
	n := 0
	var unproven []seeded
	for _, sp := range d.spaces {
		for _, p := range peers {
			if p == d.host.ID() || d.host.Network().Connectedness(p) != network.Connected {
				continue
			}
			protos, err := d.host.Peerstore().GetProtocols(p)
			if err != nil {
				continue
			}
			identified := len(protos) > 0
			if identified && !slices.Contains(protos, sp.proto) {
				continue
			}
			if sp.filter != nil && !sp.filter(sp.kad, p) {
				continue
			}
			if ok, err := sp.kad.RoutingTable().TryAddPeer(p, true, true); ok && err == nil {
				n++
				if !identified {
					unproven = append(unproven, seeded{sp, p})
				}
			}
		}
	}
	if len(unproven) > 0 {
		d.wg.Add(1)
		go d.prove(unproven)
	}
	return n
}

// seedProof is how long Seed's peers taken in before identify are watched
// for identify's answer.
const seedProof = 10 * time.Second

// seeded is a peer Seed took into sp's table before identify.
type seeded struct {
	sp *space
	p  peer.ID
}

// prove drops each of peers from its table once identify shows it does
// not speak the table's protocol.
func (d *Node) prove(peers []seeded) {
	defer d.wg.Done()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(seedProof)
	for len(peers) > 0 && time.Now().Before(deadline) {
		select {
		case <-d.done:
			return
		case <-t.C:
		}
		left := peers[:0]
		for _, s := range peers {
			protos, err := d.host.Peerstore().GetProtocols(s.p)
			switch {
			case err != nil || len(protos) == 0:
				left = append(left, s) // not identified yet
			case !slices.Contains(protos, s.sp.proto):
				s.sp.kad.RoutingTable().RemovePeer(s.p)
				d.count.add("seed_dropped", 1)
				d.log.Warn("a bootstrap peer does not serve this DHT: dropped from its routing table", "peer", s.p, "dht", s.sp.name)
			}
		}
		peers = left
	}
}

// TableSizes returns the size of each routing table by space ("wan",
// "lan"; only "wan" when Flat).
func (d *Node) TableSizes() map[string]int {
	out := map[string]int{}
	for _, sp := range d.spaces {
		out[sp.name] = sp.kad.RoutingTable().Size()
	}
	return out
}

// Refresh refreshes every routing table that holds a peer and waits until
// the refreshes end or ctx does. It returns the first refresh's error.
func (d *Node) Refresh(ctx context.Context) error {
	var errs []error
	for _, sp := range d.active() {
		select {
		case err := <-sp.kad.RefreshRoutingTable():
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// Router returns the content and peer routing of the node's DHTs, for
// provider records of manifests: kad-dht's dual router (provides go to the
// WAN DHT once it holds peers, else to the LAN DHT; finds ask both), or
// the one kad-dht when Flat.
func (d *Node) Router() routing.Routing {
	if d.dual != nil {
		return d.dual
	}
	return d.kad
}

// Dial budget: a dial of a fresh connection takes a few round trips (TCP,
// then Noise; or QUIC's one), so a peer whose dial takes dialRTTs times the
// network's typical request latency is most likely gone.
const (
	dialRTTs      = 6
	minDialBudget = 300 * time.Millisecond
)

// dialBudget bounds the dial of each peer contacted under ctx (lookups and
// requests), so that a peer that has gone costs a short wait, not the
// transport's own timeout (5 s for a dead QUIC address): dialRTTs times
// the median request latency of the routing tables' peers (kad-dht and
// the instances protocol record it), at least minDialBudget and at most
// DialTimeout, which is also the budget until a peer has a latency (a
// node records its first from the time its bootstrap dial took).
func (d *Node) dialBudget(ctx context.Context) context.Context {
	return network.WithDialPeerTimeout(ctx, d.budget())
}

func (d *Node) budget() time.Duration {
	var lat []time.Duration
	for _, p := range d.Peers() {
		if l := d.host.Peerstore().LatencyEWMA(p); l > 0 {
			lat = append(lat, l)
		}
	}
	if len(lat) == 0 {
		return d.cfg.DialTimeout
	}
	slices.Sort(lat)
	return min(d.cfg.DialTimeout, max(minDialBudget, dialRTTs*lat[len(lat)/2]))
}

func (d *Node) gcLoop() {
	defer d.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-t.C:
			d.store.GC()
			d.fwd.gc(time.Now())
			d.limMu.Lock()
			for p, l := range d.limiters { // a full bucket is an idle peer
				if l.Tokens() >= float64(l.Burst()) {
					delete(d.limiters, p)
				}
			}
			d.limMu.Unlock()
		}
	}
}

// allow takes one request token of peer p.
func (d *Node) allow(p peer.ID) bool {
	d.limMu.Lock()
	defer d.limMu.Unlock()
	l, ok := d.limiters[p]
	if !ok {
		l = rate.NewLimiter(rate.Limit(d.cfg.PeerRate), int(5*d.cfg.PeerRate))
		d.limiters[p] = l
	}
	return l.AllowN(d.cfg.RateNow(), 1)
}

// Kad returns the WAN kad-dht instance (the only one when Flat).
func (d *Node) Kad() *kaddht.IpfsDHT { return d.kad }

// LAN returns the LAN kad-dht instance, nil when Flat.
func (d *Node) LAN() *kaddht.IpfsDHT {
	if d.dual == nil {
		return nil
	}
	return d.dual.LAN
}

// Store returns the local record store.
func (d *Node) Store() *Store { return d.store }

// Counters returns a snapshot of the DHT's message counters (requests
// sent and received, bytes) merged with the store's counters.
func (d *Node) Counters() map[string]uint64 {
	out := d.count.snapshot()
	for k, v := range d.store.Counters() {
		out["store_"+k] = v
	}
	return out
}

// Server reports whether the node currently serves one of its DHTs.
func (d *Node) Server() bool {
	for _, sp := range d.spaces {
		if d.serving(sp) {
			return true
		}
	}
	return false
}

// Modes returns each DHT's mode by space: "server" or "client".
func (d *Node) Modes() map[string]string {
	out := map[string]string{}
	for _, sp := range d.spaces {
		out[sp.name] = "client"
		if d.serving(sp) {
			out[sp.name] = "server"
		}
	}
	return out
}

// Close stops the DHT and removes the protocol handler. It is safe to call
// more than once.
func (d *Node) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.host.RemoveStreamHandler(ProtocolID)
		d.stopDepartures()
		close(d.done)
		if d.dual != nil {
			err = d.dual.Close()
		} else {
			err = d.kad.Close()
		}
		d.wg.Wait()
	})
	return err
}

// PublishStats says where a record went.
type PublishStats struct {
	Closest int  // peers the lookups returned
	Sent    int  // peers sent the record: the closest, and likely storers met on the way
	Stored  int  // remote peers that accepted the record
	Local   bool // stored in this node's own store (it is a DHT server)
	// Shards is the largest shard count the storers advised for the
	// record's set (at least the record's own): when above the record's,
	// its publisher should sign again with it (see PublishSigned).
	Shards int
}

// ErrNotStored is returned (wrapped) by Publish when no remote peer took
// the record. The node's own store may still hold it (PublishStats.Local),
// but only finders that ask this very node can see it.
var ErrNotStored = errors.New("dht: no remote peer stored the record")

// PublisherKey returns the DHT key of the set of one publisher's records
// for the cell name: "/cell/<org>/<name>/@<hex publisher key>".
func PublisherKey(name string, publisher ed25519.PublicKey) string {
	return record.Key(name) + "/@" + hex.EncodeToString(publisher)
}

// setKey returns the base key of the name's set (publisher nil) or of the
// publisher's set for the name: every shard of the set lives at the peers
// closest to it (docs/records.md, "Shards").
func setKey(name string, publisher ed25519.PublicKey) string {
	if publisher == nil {
		return record.Key(name)
	}
	return PublisherKey(name, publisher)
}

// ShardKey returns the name of shard shard of the set whose key is key:
// key itself for shard 0, else key + "/#" + the shard in decimal
// ("/cell/acme/exchange/#5"; docs/records.md, "Shards"). It names a shard
// (in logs and caches); it does not place one: every shard of a set lives
// at the peers closest to the set's own key.
func ShardKey(key string, shard int) string {
	if shard <= 0 {
		return key
	}
	return key + "/#" + strconv.Itoa(shard)
}

// Publish stores the signed record r at the peers closest to its cell
// name's key and, when r is delegated, also at the peers closest to its
// publisher's key for the name (so finders that trust that publisher can
// skip everything else stored under the name), in every DHT whose table
// holds peers (WAN and LAN, in parallel). It stores r in the local store
// too when this node is a DHT server. It fails, wrapping ErrNotStored and
// the first refusal, when no remote peer took the record.
func (d *Node) Publish(ctx context.Context, r *record.Record) (PublishStats, error) {
	var st PublishStats
	if r.Bytes() == nil {
		return st, errors.New("dht: publish: record is not signed")
	}
	targets := []ed25519.PublicKey{nil}
	if pub := r.Publisher(); pub != nil {
		targets = append(targets, pub)
	}
	var first error
	st.Shards = r.ShardCount()
	if d.Server() {
		for _, pub := range targets {
			_, advice, err := d.store.PutIn("", r.Name, pub, r.Shard(), r.Bytes())
			if err != nil {
				first = err
			} else {
				st.Local = true
			}
			st.Shards = max(st.Shards, advice)
		}
	}
	ctx = d.dialBudget(ctx)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sp := range d.active() {
		for _, pub := range targets {
			wg.Go(func() {
				closest, sent, stored, advice, err := d.publishAt(ctx, sp, r, pub)
				mu.Lock()
				defer mu.Unlock()
				st.Shards = max(st.Shards, advice)
				st.Closest += closest
				st.Sent += sent
				st.Stored += stored
				if first == nil {
					first = err
				}
			})
		}
	}
	wg.Wait()
	if st.Stored == 0 {
		if first == nil {
			first = errors.New("no DHT server known")
		}
		return st, fmt.Errorf("dht: publish %s: %w: %w", r.Name, ErrNotStored, first)
	}
	return st, nil
}

// publishAt stores r at the peers of space sp closest to the key of the
// name's set (pub nil) or of the publisher's set. When the storers that
// took the previous publish of this key are remembered (lookupTTL), it
// sends r to them, keeping the set up by asking its members (see reuse),
// unless r is a withdrawal: a withdrawal goes to them and through a
// lookup. Otherwise it
// looks up the closest peers: likely storers are sent the record as the
// lookup hears of them, so that it can be found before the lookup ends;
// the lookup's closest peers are sent it at the end. It returns the first
// error seen.
//
// It also returns the largest shard count advice of the storers' answers.
func (d *Node) publishAt(ctx context.Context, sp *space, r *record.Record, pub ed25519.PublicKey) (closest, sent, stored, advice int, first error) {
	shard := r.Shard()
	key := setKey(r.Name, pub) // every shard's storers: the set's base key's closest
	var mu sync.Mutex
	var wg sync.WaitGroup
	sentTo := map[peer.ID]bool{}
	var took, forwardedTo, forwarders []peer.ID // forwarders: those that stored r themselves
	store := func(p peer.ID) {
		mu.Lock()
		defer mu.Unlock()
		if sentTo[p] {
			return
		}
		sentTo[p] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.count.add("put_sent", 1)
			resp, err := d.call(ctx, p, request{Op: opPut, Name: r.Name, Record: r.Bytes(), Publisher: pub, Shard: uint64(shard)})
			mu.Lock()
			defer mu.Unlock()
			if resp != nil && resp.Shards <= record.MaxShards {
				advice = max(advice, int(resp.Shards))
			}
			if err == nil {
				stored++
				took = append(took, p)
			} else if first == nil {
				first = err
			}
		}()
	}
	prev := sp.storers.get(key, time.Now())
	if r.Withdrawn {
		// A withdrawal goes to every peer that took the last record
		// (peripheral storers that took an early PUT included: finders
		// may remember them) and through a fresh lookup.
		for _, p := range sp.holders.get(key, time.Now()) {
			store(p)
		}
	} else if len(prev) >= minReuse && !d.cfg.AlwaysLookup {
		wait := func() []peer.ID {
			wg.Wait()
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(took)
		}
		if set, ok := d.reuse(ctx, sp, key, prev, store, wait); ok {
			d.count.add("publish_reused", 1)
			mu.Lock()
			defer mu.Unlock()
			return len(set), len(sentTo), stored, advice, nil
		}
		// The set could not be kept up: look up afresh (the peers that
		// took r already are not sent it again).
		first = nil
	}
	if !r.Withdrawn && d.young(sp) && len(sp.holders.get(key, time.Now())) == 0 {
		// A newcomer's first PUTs of a set wait for a lookup and a
		// handshake with each storer: peers it is connected to forward
		// the record meanwhile (see forward.go).
		d.askForward(ctx, &wg, sp, key, request{Op: opPut, Name: r.Name, Record: r.Bytes(), Publisher: pub, Shard: uint64(shard)}, func(took bool, to []peer.ID) {
			mu.Lock()
			forwardedTo = append(forwardedTo, to...)
			if took {
				forwarders = append(forwarders, to[0])
			}
			mu.Unlock()
		})
	}
	rank := newRanker(d.host.ID(), kb.ConvertKey(key), d.nearPrefix(sp))
	// The lookup's closest (at most 2 per IP group) are sent r once it
	// converges, and again (a no-op for those sent it) once it returns.
	storeClosest := func(closest []peer.ID) []peer.ID {
		peers := d.diverse(kb.ConvertKey(key), d.cfg.Replication, closest, rank.closest(math.MaxInt))
		for _, p := range peers {
			store(p)
		}
		return peers
	}
	peers, err, _ := d.lookup(ctx, sp, key, func(p peer.ID) {
		if i, ok := rank.add(p); ok && i < askRank {
			store(p)
		}
	}, nil, func(closest []peer.ID) { storeClosest(closest) })
	peers = storeClosest(peers)
	wg.Wait()
	switch held := union(took, forwardedTo); {
	case stored > 0 && err == nil: // remember the closest that took r, and all that did
		var reuse []peer.ID
		for _, p := range peers {
			if slices.Contains(took, p) {
				reuse = append(reuse, p)
			}
		}
		sp.storers.put(key, reuse, time.Now())
		sp.holders.put(key, held, time.Now())
	case len(held) > 0:
		// A lookup that failed, or PUTs that did (only forwarders took
		// r): the peers that took it still hold it, and so may the
		// holders of the records before it, which this publish did not
		// reach. A withdrawal must reach them all.
		sp.holders.put(key, union(sp.holders.get(key, time.Now()), held), time.Now())
	}
	// A forwarder that stored r is a remote peer that took it, though no
	// PUT of this publish reached it (the lookup failed or did not name it).
	stored = len(union(took, forwarders))
	if stored > 0 {
		return len(peers), len(sentTo), stored, advice, nil
	}
	if err != nil {
		first = err
	}
	return len(peers), len(sentTo), stored, advice, first
}

// FindStats says how a find went.
type FindStats struct {
	Closest   int            // peers the completed lookups returned
	Lookups   int            // closest-peer lookups run: one per set and space (every shard of a set shares it), none when remembered storers answered
	Asked     int            // peers sent a get
	Responded int            // peers that answered the get
	Received  int            // distinct records received, valid or not
	Rejected  map[string]int // records dropped, by Reason
	Lookup    time.Duration  // time spent in the closest-peer lookups
	First     time.Duration  // time to the first answer holding a record; 0 if none
	Early     bool           // storers agreed before the lookup ended
	Cached    bool           // remembered closest peers answered without a lookup
	FromCache bool           // answered from the result cache (Config.FindCache): no message sent
	Agreed    bool           // every set (and shard) gathered had 3 storers' answers agreeing on it
	// Shards is how many shards of each set the find asked: the largest
	// shard count met in a valid record or a storer's advice (or
	// remembered from a find of the last minute), 1 for a cell that is
	// not sharded.
	Shards int
	// Unanswered lists the shards (0 to Shards-1) of which no storer
	// answered, in any space: their instances may be missing from the
	// result, which holds every instance of the shards that answered.
	Unanswered []int
}

// ErrNoPeers is returned by Find when the lookup reached no peer at all; the
// local store's records are still returned with it.
var ErrNoPeers = errors.New("dht: no peer to ask")

// Find returns the live instances of the cell name: the newest record of
// each node among those held by the peers closest to the key and by the
// local store, each verified at the time now (nil means time.Now).
// Withdrawn instances are left out. Records that fail verification are
// dropped and counted in FindStats.Rejected.
//
// With no publishers, Find reads the name's own set. With publishers, it
// keeps only the records delegated by one of them, and asks the peers
// closest to each publisher's key for the name (in parallel) instead of the
// name's key, so that records stored under the name by anybody else cannot
// crowd them out; records from other publishers are dropped and counted as
// "wrong_publisher".
//
// Each set is gathered while kad-dht's lookup proceeds: a peer that answers
// the lookup and ranks among the closest seen so far is asked for the set
// at once, and the gather stops as soon as 3 storers answer with the same
// non-empty set (a set is replicated at the closest peers, so the rest of
// the lookup would only confirm it). The closest peers of a key are
// remembered for a minute, so a repeated find asks them directly. Find is
// Collect, then Merge, then the publisher filter. With Config.FindCache, a
// find is answered from the node's last find of the same name and
// publishers while that is fresh (see findcache.go).
func (d *Node) Find(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time) ([]*record.Record, FindStats, error) {
	if now == nil {
		now = time.Now
	}
	if d.cfg.FindCache > 0 {
		return d.findCached(ctx, name, publishers, now)
	}
	raws, verified, st, err := d.collect(ctx, name, publishers, now, nil)
	if err != nil && !errors.Is(err, ErrNoPeers) {
		return nil, st, err
	}
	recs := Live(newest(name, raws, verified, now(), st.Rejected))
	return keepTrusted(recs, publishers, st.Rejected), st, err
}

// keepTrusted returns the records of recs that one of publishers
// delegated (all of them when publishers is empty), counting the others in
// rejected.
func keepTrusted(recs []*record.Record, publishers []ed25519.PublicKey, rejected map[string]int) []*record.Record {
	if len(publishers) == 0 {
		return recs
	}
	kept := recs[:0]
	for _, r := range recs {
		if trusted(r.Publisher(), publishers) {
			kept = append(kept, r)
		} else {
			rejected[record.Reason(record.ErrWrongPublisher)]++
		}
	}
	return kept
}

// Collect is the first half of Find: it gathers the raw records of the
// name's set (no publishers) or of each publisher's set for the name, from
// the peers closest to their keys and from the local store, without merging
// them or filtering them by publisher. A caller that collects several sets
// merges them all at once (see Merge and Newest), so that a withdrawal seen
// in one set hides an older record seen in another. Records are
// verified as they arrive; invalid ones are dropped and counted in
// FindStats.Rejected. The error wraps ErrNoPeers when no peer answered and
// the lookup failed; the local records are returned with it.
func (d *Node) Collect(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time) ([][]byte, FindStats, error) {
	raws, _, st, err := d.collect(ctx, name, publishers, now, nil)
	return raws, st, err
}

// CollectSeen is Collect, also returning the records its gathers verified
// (signatures included, by their raw bytes; the local store's records are
// not in it), so that the caller's merge need not verify them again, and
// calling seen, when it is not nil, with each valid record of the sets
// (withdrawals included) as soon as the first answer that brings it is
// verified, while the gather goes on: a finder can start work on an
// instance (probing its endpoints) before the answers agree. seen is
// called from the gather's goroutines, possibly at once, and never twice
// for the same bytes in one shard of a set. A GET still out when
// CollectSeen returns may call it later (until ctx ends), so a caller
// that cares ignores calls after the return. A record it is given may lose
// to a newer one of the same instance in the merge.
func (d *Node) CollectSeen(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time, seen func(*record.Record)) ([][]byte, map[string]*record.Record, FindStats, error) {
	return d.collect(ctx, name, publishers, now, seen)
}

// collect is CollectSeen. The verified records spare Find a second check
// of their signatures (for a large cell, 1,000 signatures: 60 to 90 ms of
// CPU at BenchmarkVerify's 57 to 94 µs each).
func (d *Node) collect(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time, seen func(*record.Record)) ([][]byte, map[string]*record.Record, FindStats, error) {
	st := FindStats{Rejected: map[string]int{}}
	if _, err := record.ParseName(name); err != nil {
		return nil, nil, st, err
	}
	if now == nil {
		now = time.Now
	}
	targets := publishers
	if len(targets) == 0 {
		targets = []ed25519.PublicKey{nil}
	}
	var mu sync.Mutex
	var raws [][]byte
	verified := map[string]*record.Record{}
	var lookupErr error
	answered := map[int]int{} // by shard: the storers that answered, over spaces and sets
	shards := d.shards.findHint(name, time.Now())
	first := true // no gather has reported yet (see FindStats.Agreed)
	add := func(shard int, got [][]byte, gs gatherStats) {
		mu.Lock()
		defer mu.Unlock()
		raws = append(raws, got...)
		for i, r := range gs.verified {
			if r != nil && i < len(got) {
				verified[string(got[i])] = r
			}
		}
		answered[shard] += gs.answered
		st.Closest += gs.closest
		st.Lookups += gs.lookups
		st.Asked += gs.asked
		st.Responded += gs.answered
		st.Lookup = max(st.Lookup, gs.lookup)
		if gs.first > 0 && (st.First == 0 || gs.first < st.First) {
			st.First = gs.first
		}
		st.Early = st.Early || gs.early
		st.Cached = st.Cached || gs.cached
		st.Agreed = gs.agreed && (st.Agreed || first)
		first = false
		if gs.lookupErr != nil && lookupErr == nil {
			lookupErr = gs.lookupErr
		}
		for k, v := range gs.rejected {
			st.Rejected[k] += v
		}
	}
	ctx = d.dialBudget(ctx)
	var sets []*setGather
	var wg sync.WaitGroup
	for _, sp := range d.active() {
		for _, pub := range targets {
			sg := newSetGather(d, ctx, sp, name, pub, now)
			sg.seen = seen
			sets = append(sets, sg)
			wg.Go(func() { sg.run(shards, add) })
		}
	}
	wg.Wait()
	used := shards
	for _, sg := range sets {
		used = max(used, sg.count())
	}
	for _, pub := range targets {
		for shard := range used {
			for _, r := range d.store.GetIn(name, pub, shard) {
				raws = append(raws, r.Bytes())
			}
		}
	}
	st.Shards = used
	if len(sets) > 0 {
		for shard := range used {
			if answered[shard] == 0 {
				st.Unanswered = append(st.Unanswered, shard)
			}
		}
	}
	d.shards.found(name, used, time.Now())
	st.Received = len(raws)
	for reason, n := range st.Rejected {
		d.count.add("find_rejected_"+reason, uint64(n))
	}
	if st.Responded == 0 && (lookupErr != nil || len(d.active()) == 0) {
		if lookupErr == nil {
			lookupErr = errors.New("every routing table is empty")
		}
		return raws, verified, st, fmt.Errorf("%w: %w", ErrNoPeers, lookupErr)
	}
	return raws, verified, st, nil
}

func trusted(pub ed25519.PublicKey, list []ed25519.PublicKey) bool {
	for _, p := range list {
		if pub != nil && bytes.Equal(pub, p) {
			return true
		}
	}
	return false
}

// Merge verifies raw records of name at now and keeps the newest record of
// each node, dropping withdrawn instances. Identical copies are verified
// and counted once. Rejections are counted in rejected by Reason when it is
// not nil. The result is ordered by peer ID.
func Merge(name string, raws [][]byte, now time.Time, rejected map[string]int) []*record.Record {
	return Live(Newest(name, raws, now, rejected))
}

// Newest is Merge keeping withdrawals: the newest valid record of each
// node, withdrawn or not, ordered by peer ID. A finder that remembers what
// it saw keeps the withdrawals too, so that a later find that misses one
// does not bring the older record back.
func Newest(name string, raws [][]byte, now time.Time, rejected map[string]int) []*record.Record {
	return newest(name, raws, nil, now, rejected)
}

// newest is Newest, taking the records of verified (by raw bytes: records
// of name a gather verified, signatures included) as verified but for the
// clock, which it checks again at now.
func newest(name string, raws [][]byte, verified map[string]*record.Record, now time.Time, rejected map[string]int) []*record.Record {
	return NewestWith(name, raws, now, rejected, func(raw []byte) (*record.Record, error) {
		if r := verified[string(raw)]; r != nil && r.Name == name {
			return r, r.Check(now)
		}
		return record.Verify(raw, name, now)
	})
}

// NewestWith is Newest with verify checking each distinct raw record in
// place of record.Verify(raw, name, now): a caller that remembers the
// records it verified checks only the clock of those. verify must apply
// every rule record.Verify does for name at now.
func NewestWith(name string, raws [][]byte, now time.Time, rejected map[string]int, verify func(raw []byte) (*record.Record, error)) []*record.Record {
	best := map[peer.ID]*record.Record{}
	seen := make(map[string]bool, len(raws))
	for _, raw := range raws {
		// The closest peers mostly hold the same bytes: verify each once.
		if seen[string(raw)] {
			continue
		}
		seen[string(raw)] = true
		r, err := verify(raw)
		if err != nil {
			if rejected != nil {
				rejected[record.Reason(err)]++
			}
			continue
		}
		if old, ok := best[r.Peer]; !ok || r.Seq > old.Seq {
			best[r.Peer] = r
		}
	}
	out := make([]*record.Record, 0, len(best))
	for _, r := range best {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// Live returns the records of recs that are not withdrawals, in order.
func Live(recs []*record.Record) []*record.Record {
	out := make([]*record.Record, 0, len(recs))
	for _, r := range recs {
		if !r.Withdrawn {
			out = append(out, r)
		}
	}
	return out
}
