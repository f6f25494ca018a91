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
	"sort"
	"sync"
	"time"

	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Mode says whether a node serves the DHT.
type Mode int

const (
	// ModeAuto serves the DHT once libp2p finds the node publicly reachable,
	// and is a client until then.
	ModeAuto Mode = iota
	// ModeServer always serves the DHT.
	ModeServer
	// ModeClient never serves the DHT.
	ModeClient
)

// ProtocolPrefix is the kad-dht protocol prefix of the cell network. It keeps
// cell nodes off the public IPFS DHT.
const ProtocolPrefix = "/cell"

// Config configures a DHT. The zero value works.
type Config struct {
	// Mode is the DHT mode; the zero value is ModeAuto.
	Mode Mode
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
	// Logger receives debug logs; nil means discard.
	Logger *slog.Logger
}

// DHT is a node's view of the cell namespace: a kad-dht instance with the
// cell validator, the local set-valued store (served when the node is a DHT
// server) and the instances protocol. It is safe for concurrent use.
type DHT struct {
	cfg     Config
	host    host.Host
	kad     *kaddht.IpfsDHT
	store   *Store
	closest closestCache // closest peers of recent finds
	log     *slog.Logger
	count   Counters

	limMu    sync.Mutex
	limiters map[peer.ID]*rate.Limiter // per remote peer, for the instances protocol

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// New starts a DHT on h and registers the instances protocol on it. It
// starts everything or nothing; Close stops what it started (not h).
func New(h host.Host, cfg Config) (*DHT, error) {
	if cfg.BucketSize <= 0 {
		cfg.BucketSize = 20
	}
	if cfg.Replication <= 0 {
		cfg.Replication = cfg.BucketSize
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	if cfg.PeerRate <= 0 {
		cfg.PeerRate = 20
	}
	if cfg.Store.Now == nil {
		cfg.Store.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kad, err := kaddht.New(h, kadOptions(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("dht: start kad-dht: %w", err)
	}
	d := &DHT{
		cfg: cfg, host: h, kad: kad, store: NewStore(cfg.Store), log: log,
		count: newCounters(), done: make(chan struct{}), limiters: map[peer.ID]*rate.Limiter{},
	}
	h.SetStreamHandler(ProtocolID, d.handle)
	d.wg.Add(1)
	go d.gcLoop()
	return d, nil
}

// kadOptions is the one place where Config becomes kad-dht options.
func kadOptions(cfg Config) []kaddht.Option {
	mode := map[Mode]kaddht.ModeOpt{ModeAuto: kaddht.ModeAuto, ModeServer: kaddht.ModeServer, ModeClient: kaddht.ModeClient}[cfg.Mode]
	opts := []kaddht.Option{
		kaddht.ProtocolPrefix(ProtocolPrefix),
		kaddht.Validator(record.NamespacedValidator{"cell": Validator{Now: cfg.Store.Now}}),
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

func (d *DHT) gcLoop() {
	defer d.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-t.C:
			d.store.GC()
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
func (d *DHT) allow(p peer.ID) bool {
	d.limMu.Lock()
	defer d.limMu.Unlock()
	l, ok := d.limiters[p]
	if !ok {
		l = rate.NewLimiter(rate.Limit(d.cfg.PeerRate), int(5*d.cfg.PeerRate))
		d.limiters[p] = l
	}
	return l.Allow()
}

// Kad returns the underlying kad-dht instance.
func (d *DHT) Kad() *kaddht.IpfsDHT { return d.kad }

// Store returns the local record store.
func (d *DHT) Store() *Store { return d.store }

// Counters returns a snapshot of the DHT's message counters (requests
// sent and received, bytes) merged with the store's counters.
func (d *DHT) Counters() map[string]uint64 {
	out := d.count.snapshot()
	for k, v := range d.store.Counters() {
		out["store_"+k] = v
	}
	return out
}

// Server reports whether the node currently serves the DHT.
func (d *DHT) Server() bool { return d.kad.Mode() == kaddht.ModeServer }

// Close stops the DHT and removes the protocol handler. It is safe to call
// more than once.
func (d *DHT) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.host.RemoveStreamHandler(ProtocolID)
		close(d.done)
		err = d.kad.Close()
		d.wg.Wait()
	})
	return err
}

// PublishStats says where a record went.
type PublishStats struct {
	Closest int  // peers the lookups returned
	Sent    int  // peers sent the record: the closest, and likely storers met on the way
	Stored  int  // peers that accepted the record
	Local   bool // stored in this node's own store (it is a DHT server)
}

// PublisherKey returns the DHT key of the set of one publisher's records
// for the cell name: "/cell/<org>/<name>/@<hex publisher key>".
func PublisherKey(name string, publisher ed25519.PublicKey) string {
	return Key(name) + "/@" + hex.EncodeToString(publisher)
}

// setKey returns the DHT key of the name's set (publisher nil) or of the
// publisher's set for the name.
func setKey(name string, publisher ed25519.PublicKey) string {
	if publisher == nil {
		return Key(name)
	}
	return PublisherKey(name, publisher)
}

// Publish stores the signed record r at the peers closest to its cell
// name's key and, when r is delegated, also at the peers closest to its
// publisher's key for the name (so finders that trust that publisher can
// skip everything else stored under the name). It stores r in the local
// store too when this node is a DHT server. It fails only if nobody took
// the record; the first refusal is returned then.
func (d *DHT) Publish(ctx context.Context, r *Record) (PublishStats, error) {
	var st PublishStats
	if r.raw == nil {
		return st, errors.New("dht: publish: record is not signed")
	}
	targets := []ed25519.PublicKey{nil}
	if pub := r.Publisher(); pub != nil {
		targets = append(targets, pub)
	}
	var first error
	if d.Server() {
		for _, pub := range targets {
			if _, err := d.store.PutFor(r.Name, pub, r.raw); err != nil {
				first = err
			} else {
				st.Local = true
			}
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, pub := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closest, sent, stored, err := d.publishAt(ctx, r, pub)
			mu.Lock()
			defer mu.Unlock()
			st.Closest += closest
			st.Sent += sent
			st.Stored += stored
			if first == nil {
				first = err
			}
		}()
	}
	wg.Wait()
	if st.Stored == 0 && !st.Local {
		if first == nil {
			first = errNoStore
		}
		return st, fmt.Errorf("dht: publish %s: no peer stored it: %w", r.Name, first)
	}
	return st, nil
}

// publishAt stores r at the peers closest to the key of the name's set
// (pub nil) or of the publisher's set. Likely storers are sent the record
// as the lookup hears of them, so that it can be found before the lookup
// ends; the lookup's closest peers are sent it at the end. It returns the
// first error seen.
func (d *DHT) publishAt(ctx context.Context, r *Record, pub ed25519.PublicKey) (closest, sent, stored int, first error) {
	key := setKey(r.Name, pub)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sentTo := map[peer.ID]bool{}
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
			_, err := d.call(ctx, p, request{Op: opPut, Name: r.Name, Record: r.raw, Publisher: pub})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				stored++
			} else if first == nil {
				first = err
			}
		}()
	}
	rank := newRanker(d.host.ID(), kb.ConvertKey(key), d.nearPrefix())
	peers, err, _ := d.lookup(ctx, key, func(p peer.ID) {
		if i, ok := rank.add(p); ok && i < askRank {
			store(p)
		}
	}, nil)
	peers = d.diverse(kb.ConvertKey(key), d.cfg.Replication, peers, rank.closest(math.MaxInt))
	for _, p := range peers {
		store(p)
	}
	wg.Wait()
	if stored > 0 {
		return len(peers), len(sentTo), stored, nil
	}
	if err != nil {
		first = err
	}
	return len(peers), len(sentTo), stored, first
}

// FindStats says how a find went.
type FindStats struct {
	Closest   int            // peers the completed lookups returned
	Asked     int            // peers sent a get
	Responded int            // peers that answered the get
	Received  int            // distinct records received, valid or not
	Rejected  map[string]int // records dropped, by Reason
	Lookup    time.Duration  // time spent in the closest-peer lookups
	First     time.Duration  // time to the first answer holding a record; 0 if none
	Early     bool           // storers agreed before the lookup ended
	Cached    bool           // remembered closest peers answered without a lookup
}

// ErrNoPeers is returned by Find when the lookup reached no peer at all; the
// local store's records are still returned with it.
var ErrNoPeers = errors.New("dht: no peer to ask")

// Find returns the live instances of the cell name: the newest record of
// each node among those held by the peers closest to the name's key and by
// the local store, each verified at the time now. Withdrawn instances are
// left out. Records that fail verification are dropped and counted in
// FindStats.Rejected.
func (d *DHT) Find(ctx context.Context, name string, now func() time.Time) ([]*Record, FindStats, error) {
	return d.FindFrom(ctx, name, nil, now)
}

// FindFrom is Find restricted to the records delegated by one of the
// publishers: it asks the peers closest to each publisher's key for the
// name (in parallel) instead of the name's key, so records stored under the
// name by anybody else cannot crowd them out. No publishers means Find.
// Records from other publishers are dropped and counted as
// "wrong_publisher".
//
// Each set is gathered while kad-dht's lookup proceeds: a peer that answers
// the lookup and ranks among the closest seen so far is asked for the set
// at once, and the gather stops as soon as 3 storers answer with the same
// non-empty set (a set is replicated at the closest peers, so the rest of
// the lookup would only confirm it). The closest peers of a key are
// remembered for a minute, so a repeated find asks them directly.
func (d *DHT) FindFrom(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time) ([]*Record, FindStats, error) {
	if now == nil {
		now = time.Now
	}
	raws, st, err := d.Collect(ctx, name, publishers, now)
	if err != nil && !errors.Is(err, ErrNoPeers) {
		return nil, st, err
	}
	recs := Merge(name, raws, now(), st.Rejected)
	if len(publishers) > 0 {
		kept := recs[:0]
		for _, r := range recs {
			if trusted(r.Publisher(), publishers) {
				kept = append(kept, r)
			} else {
				st.Rejected[Reason(ErrWrongPublisher)]++
			}
		}
		recs = kept
	}
	return recs, st, err
}

// Collect gathers the raw records of the name's set (no publishers) or of
// each publisher's set for the name, from the peers closest to their keys
// and from the local store, without merging them: a caller that collects
// several sets merges them all at once (see Merge), so that a withdrawal
// seen in one set hides an older record seen in another. Records are
// verified as they arrive; invalid ones are dropped and counted in
// FindStats.Rejected. The error wraps ErrNoPeers when no peer answered and
// the lookup failed; the local records are returned with it.
func (d *DHT) Collect(ctx context.Context, name string, publishers []ed25519.PublicKey, now func() time.Time) ([][]byte, FindStats, error) {
	st := FindStats{Rejected: map[string]int{}}
	if _, err := ParseName(name); err != nil {
		return nil, st, err
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
	var lookupErr error
	for _, pub := range targets {
		for _, r := range d.store.GetFor(name, pub) {
			raws = append(raws, r.raw)
		}
	}
	var wg sync.WaitGroup
	for _, pub := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, gs := d.gather(ctx, name, pub, now)
			mu.Lock()
			defer mu.Unlock()
			raws = append(raws, got...)
			st.Closest += gs.closest
			st.Asked += gs.asked
			st.Responded += gs.answered
			st.Lookup = max(st.Lookup, gs.lookup)
			if gs.first > 0 && (st.First == 0 || gs.first < st.First) {
				st.First = gs.first
			}
			st.Early = st.Early || gs.early
			st.Cached = st.Cached || gs.cached
			if gs.lookupErr != nil && lookupErr == nil {
				lookupErr = gs.lookupErr
			}
			for k, v := range gs.rejected {
				st.Rejected[k] += v
			}
		}()
	}
	wg.Wait()
	st.Received = len(raws)
	for reason, n := range st.Rejected {
		d.count.add("find_rejected_"+reason, uint64(n))
	}
	if st.Responded == 0 && lookupErr != nil {
		return raws, st, fmt.Errorf("%w: %v", ErrNoPeers, lookupErr)
	}
	return raws, st, nil
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
func Merge(name string, raws [][]byte, now time.Time, rejected map[string]int) []*Record {
	best := map[peer.ID]*Record{}
	seen := make(map[string]bool, len(raws))
	for _, raw := range raws {
		// The closest peers mostly hold the same bytes: verify each once.
		if seen[string(raw)] {
			continue
		}
		seen[string(raw)] = true
		r, err := Verify(raw, name, now)
		if err != nil {
			if rejected != nil {
				rejected[Reason(err)]++
			}
			continue
		}
		if old, ok := best[r.Peer]; !ok || r.Seq > old.Seq {
			best[r.Peer] = r
		}
	}
	out := make([]*Record, 0, len(best))
	for _, r := range best {
		if !r.Withdrawn {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}
