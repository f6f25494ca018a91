package dht

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrFull is returned by Store.Put when a name or the whole store holds as
// many live records as it may.
var ErrFull = errors.New("dht: store full")

// MaxPerNameDefault is the default bound on the records of one set (of
// one shard count or more: a set holds at most maxSetFactor times as many
// while its instances move to more shards, see Store.PutIn); a finder
// takes at most that many from one storer's answer.
const MaxPerNameDefault = 256

// StoreConfig bounds a Store. The zero value works.
type StoreConfig struct {
	// MaxPerName is the most records kept for one set with a given shard
	// count or more, and a quarter of the most kept for one set; 0 means
	// MaxPerNameDefault.
	MaxPerName int
	// MaxNames is the most sets (cell names, and publishers' sets for a
	// name) kept; 0 means 65536.
	MaxNames int
	// MaxPerPublisher is the most records one publisher key may hold in a
	// name's set, so one key cannot fill it; 0 means a quarter of
	// MaxPerName. Open records are not limited by it.
	MaxPerPublisher int
	// MaxBytes bounds the encoded records held, in bytes; 0 means 64 MiB.
	MaxBytes int
	// MaxPerSource and MaxBytesPerSource bound the records, and their
	// bytes, that PUTs from one source (an IP group or a peer, see
	// PutFrom) may hold, so that one network cannot fill the store for
	// everybody; 0 means a sixteenth of MaxNames and of MaxBytes.
	MaxPerSource      int
	MaxBytesPerSource int
	// Now is the store's clock; nil means time.Now.
	Now func() time.Time
}

// Store is the set-valued record store a DHT server keeps: for each cell
// name, the newest valid record of each publishing peer, until it expires.
// It is safe for concurrent use.
type Store struct {
	cfg StoreConfig

	mu     sync.Mutex
	byName map[string]map[peer.ID]*record.Record
	bytes  int                       // encoded size of the records held
	srcOf  map[*record.Record]string // who sent each record held (PutFrom)
	bySrc  map[string]usage
	lastGC time.Time // of a GC for a source over its quota
	count  Counters
}

// usage is what the PUTs of one source hold in a store.
type usage struct{ records, bytes int }

// NewStore returns an empty store.
func NewStore(cfg StoreConfig) *Store {
	if cfg.MaxPerName <= 0 {
		cfg.MaxPerName = MaxPerNameDefault
	}
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = 65536
	}
	if cfg.MaxPerPublisher <= 0 {
		cfg.MaxPerPublisher = max(1, cfg.MaxPerName/4)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.MaxPerSource <= 0 {
		cfg.MaxPerSource = max(1, cfg.MaxNames/16)
	}
	if cfg.MaxBytesPerSource <= 0 {
		cfg.MaxBytesPerSource = max(record.MaxRecordSize, cfg.MaxBytes/16)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, byName: make(map[string]map[peer.ID]*record.Record), srcOf: map[*record.Record]string{}, bySrc: map[string]usage{}, count: newCounters()}
}

// bucket names the set a record is kept in: the cell name's set, or the
// set of one publisher's records for the name, or shard shard (above 0)
// of either.
func bucket(name string, publisher ed25519.PublicKey, shard int) string {
	if publisher != nil {
		name += "@" + hex.EncodeToString(publisher)
	}
	if shard > 0 {
		name += "#" + strconv.Itoa(shard)
	}
	return name
}

// Put verifies raw as a record of name and stores it in the name's set,
// replacing the node's older record. A record whose sequence number is not
// above the held one is rejected with ErrStale, unless it is the identical
// record. Every rejection is counted under its Reason.
func (s *Store) Put(name string, raw []byte) (*record.Record, error) { return s.PutFor(name, nil, raw) }

// PutFor is Put into the set of the publisher's records for name; the
// record must be delegated by publisher (ErrWrongPublisher). A nil
// publisher means the name's set, which takes any valid record.
func (s *Store) PutFor(name string, publisher ed25519.PublicKey, raw []byte) (*record.Record, error) {
	return s.PutFrom("", name, publisher, raw)
}

// PutFrom is PutFor for a record that source sent: the IP group of the
// peer that sent it, or the peer itself (see DHT), "" for this node's own
// records. The records a source holds, and their bytes, are bounded by
// MaxPerSource and MaxBytesPerSource (ErrFull); "" is not bounded.
func (s *Store) PutFrom(source, name string, publisher ed25519.PublicKey, raw []byte) (*record.Record, error) {
	r, _, err := s.PutIn(source, name, publisher, 0, raw)
	return r, err
}

// PutIn is PutFrom into shard shard of the set (docs/records.md,
// "Shards"). The record must belong in that shard (record.ErrWrongShard),
// and, unless it is a withdrawal, carry at least the shard count the set
// advises (ErrShardCount): see Advice. It returns the set's advice after
// the put (also when it refuses the record).
func (s *Store) PutIn(source, name string, publisher ed25519.PublicKey, shard int, raw []byte) (*record.Record, int, error) {
	now := s.cfg.Now()
	r, err := record.VerifyIn(raw, name, shard, now)
	if err == nil && publisher != nil && !bytes.Equal(r.Publisher(), publisher) {
		err = record.ErrWrongPublisher
	}
	if err != nil {
		s.count.reject(err)
		return nil, 1, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name = bucket(name, publisher, shard)
	set := s.byName[name]
	advice := s.adviceLocked(set, now)
	if old, ok := set[r.Peer]; ok {
		if old.Seq == r.Seq && string(old.Bytes()) == string(r.Bytes()) {
			return old, advice, nil
		}
		if old.Seq >= r.Seq {
			err := fmt.Errorf("%w: seq %d, holding %d", record.ErrStale, r.Seq, old.Seq)
			s.count.reject(err)
			return nil, advice, err
		}
	}
	if !r.Withdrawn && r.ShardCount() < advice {
		err := fmt.Errorf("%w: %d, the set's is %d: sign again with %d shards", ErrShardCount, r.ShardCount(), advice, advice)
		s.count.reject(err)
		return nil, advice, err
	}
	if source != "" && !s.roomFor(source, set[r.Peer], r) {
		// The source's expired records free its quota; a flooding source
		// gets the store scanned at most once a second.
		if now.Sub(s.lastGC) >= time.Second {
			s.lastGC = now
			s.bytes -= s.gcLocked(now)
			set = s.byName[name]
		}
		if !s.roomFor(source, set[r.Peer], r) {
			u := s.bySrc[source]
			s.count.reject(ErrFull)
			return nil, advice, fmt.Errorf("%w: the sender's network holds %d records, %d bytes", ErrFull, u.records, u.bytes)
		}
	}
	if set == nil {
		if len(s.byName) >= s.cfg.MaxNames {
			s.bytes -= s.gcLocked(now)
			if len(s.byName) >= s.cfg.MaxNames {
				s.count.reject(ErrFull)
				return nil, advice, fmt.Errorf("%w: %d names", ErrFull, len(s.byName))
			}
		}
		set = make(map[peer.ID]*record.Record)
		s.byName[name] = set
	}
	old, replacing := set[r.Peer]
	if !replacing {
		if len(set) >= s.cfg.MaxPerName {
			s.bytes -= s.pruneSet(set, now)
			// A record competes only with records of its shard count or
			// more: those with fewer are of instances that have moved,
			// or will at their next publish (see Advice).
			if atLeast(set, r.ShardCount()) >= s.cfg.MaxPerName || len(set) >= maxSetFactor*s.cfg.MaxPerName {
				s.count.reject(ErrFull)
				return nil, advice, fmt.Errorf("%w: %d records for %s", ErrFull, len(set), name)
			}
		}
		if pub := r.Publisher(); publisher == nil && pub != nil && s.countPublisher(set, pub) >= s.cfg.MaxPerPublisher {
			s.count.reject(ErrFull)
			return nil, advice, fmt.Errorf("%w: publisher holds %d records for %s", ErrFull, s.cfg.MaxPerPublisher, name)
		}
	}
	grow := len(r.Bytes())
	if replacing {
		grow -= len(old.Bytes())
	}
	if s.bytes+grow > s.cfg.MaxBytes {
		s.bytes -= s.gcLocked(now)
		if s.bytes+grow > s.cfg.MaxBytes {
			s.count.reject(ErrFull)
			return nil, advice, fmt.Errorf("%w: %d bytes held", ErrFull, s.bytes)
		}
	}
	s.bytes += grow
	if replacing {
		s.release(old)
	}
	set[r.Peer] = r
	if source != "" {
		s.srcOf[r] = source
		u := s.bySrc[source]
		u.records++
		u.bytes += len(r.Bytes())
		s.bySrc[source] = u
	}
	s.count.add("stored", 1)
	return r, s.adviceLocked(set, now), nil
}

// maxSetFactor bounds a set at this many times MaxPerName records, the
// records of instances moving to more shards included.
const maxSetFactor = 4

// atLeast counts the records of set with a shard count of n or more.
func atLeast(set map[peer.ID]*record.Record, n int) int {
	c := 0
	for _, r := range set {
		if r.ShardCount() >= n {
			c++
		}
	}
	return c
}

// ErrShardCount is returned (wrapped) by Store.PutIn for a record whose
// shard count is below the one its set advises.
var ErrShardCount = errors.New("dht: shard count below the set's")

// Advice returns the shard count the set (name, publisher, shard)
// advises its publishers and finders: the largest shard count among its
// live records (1 for none), doubled (up to record.MaxShards) when records
// with that count fill three quarters of MaxPerName. (A record refused
// because its set is full is advised twice its own count: see PutIn.)
// Publishers sign with at least it (PutIn refuses less); finders ask
// every shard below the largest advice or count they meet.
func (s *Store) Advice(name string, publisher ed25519.PublicKey, shard int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adviceLocked(s.byName[bucket(name, publisher, shard)], s.cfg.Now())
}

func (s *Store) adviceLocked(set map[peer.ID]*record.Record, now time.Time) int {
	top, atTop := 1, 0
	for _, r := range set {
		if r.Check(now) != nil {
			continue
		}
		switch c := r.ShardCount(); {
		case c > top:
			top, atTop = c, 1
		case c == top:
			atTop++
		}
	}
	if top < record.MaxShards && atTop >= s.cfg.MaxPerName*3/4 {
		return 2 * top
	}
	return top
}

// FindAdvice is the shard count a storer advises a finder of the set
// (name, publisher) asking for shard shard: the shard's Advice, or the
// largest shard count among the live records of any shard of the set it
// holds, if larger. Every shard of a set lives at the same storers
// (docs/records.md, "Shards"), so one answer for any shard tells a finder
// every shard in use, even while a shard it has not asked is splitting.
func (s *Store) FindAdvice(name string, publisher ed25519.PublicKey, shard int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	return max(s.adviceLocked(s.byName[bucket(name, publisher, shard)], now), s.heldLocked(name, publisher, now))
}

// ShardsHeld returns the largest shard count among the live records this
// store holds in any shard of the set (name, publisher), 1 for none: the
// shards of the set that can hold records here are 0 to ShardsHeld-1.
func (s *Store) ShardsHeld(name string, publisher ed25519.PublicKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.heldLocked(name, publisher, s.cfg.Now())
}

func (s *Store) heldLocked(name string, publisher ed25519.PublicKey, now time.Time) int {
	n := 1
	for sh := range record.MaxShards {
		for _, r := range s.byName[bucket(name, publisher, sh)] {
			if c := r.ShardCount(); c > n && r.Check(now) == nil {
				n = c
			}
		}
	}
	return n
}

// roomFor reports whether source may hold r, replacing old (nil if none).
func (s *Store) roomFor(source string, old, r *record.Record) bool {
	u := s.bySrc[source]
	if old != nil && s.srcOf[old] == source {
		u.records--
		u.bytes -= len(old.Bytes())
	}
	return u.records+1 <= s.cfg.MaxPerSource && u.bytes+len(r.Bytes()) <= s.cfg.MaxBytesPerSource
}

// release forgets r's charge to the source that sent it, if any.
func (s *Store) release(r *record.Record) {
	src, ok := s.srcOf[r]
	if !ok {
		return
	}
	delete(s.srcOf, r)
	u := s.bySrc[src]
	u.records--
	u.bytes -= len(r.Bytes())
	if u.records <= 0 {
		delete(s.bySrc, src)
	} else {
		s.bySrc[src] = u
	}
}

// Get returns the live records of name's set, withdrawals included,
// ordered by peer ID. Each is checked against the clock again before it is
// returned; expired ones are dropped and counted.
func (s *Store) Get(name string) []*record.Record { return s.GetFor(name, nil) }

// GetFor is Get for the set of the publisher's records for name.
func (s *Store) GetFor(name string, publisher ed25519.PublicKey) []*record.Record {
	return s.GetIn(name, publisher, 0)
}

// GetIn is GetFor for shard shard of the set.
func (s *Store) GetIn(name string, publisher ed25519.PublicKey, shard int) []*record.Record {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	name = bucket(name, publisher, shard)
	set := s.byName[name]
	out := make([]*record.Record, 0, len(set))
	for id, r := range set {
		if err := r.Check(now); err != nil {
			delete(set, id)
			s.release(r)
			s.bytes -= len(r.Bytes())
			s.count.add("expired_at_serve", 1)
			continue
		}
		out = append(out, r)
	}
	if len(set) == 0 {
		delete(s.byName, name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer < out[j].Peer })
	return out
}

// GC drops every expired record and returns how many bytes it freed.
func (s *Store) GC() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	freed := s.gcLocked(s.cfg.Now())
	s.bytes -= freed
	return freed
}

// gcLocked drops expired records and empty sets and returns the bytes
// freed; the caller adjusts s.bytes.
func (s *Store) gcLocked(now time.Time) int {
	freed := 0
	for name, set := range s.byName {
		freed += s.pruneSet(set, now)
		if len(set) == 0 {
			delete(s.byName, name)
		}
	}
	return freed
}

// pruneSet drops the expired records of set and returns the bytes freed.
func (s *Store) pruneSet(set map[peer.ID]*record.Record, now time.Time) int {
	freed := 0
	for id, r := range set {
		if r.Check(now) != nil {
			delete(set, id)
			s.release(r)
			freed += len(r.Bytes())
		}
	}
	return freed
}

func (s *Store) countPublisher(set map[peer.ID]*record.Record, pub ed25519.PublicKey) int {
	n := 0
	for _, r := range set {
		if pub.Equal(r.Publisher()) {
			n++
		}
	}
	return n
}

// Bytes returns the encoded size of the records held.
func (s *Store) Bytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Len returns the number of records held, expired or not.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, set := range s.byName {
		n += len(set)
	}
	return n
}

// Counters returns a snapshot of the store's counters.
func (s *Store) Counters() map[string]uint64 { return s.count.snapshot() }

// Counters counts events by label, such as stored records and rejections by
// Reason ("rejected_bad_signature"). It is safe for concurrent use.
type Counters struct {
	mu *sync.Mutex
	m  map[string]uint64
}

func newCounters() Counters { return Counters{mu: new(sync.Mutex), m: make(map[string]uint64)} }

func (c Counters) add(label string, n uint64) {
	c.mu.Lock()
	c.m[label] += n
	c.mu.Unlock()
}

func (c Counters) reject(err error) {
	label := record.Reason(err)
	if errors.Is(err, ErrFull) {
		label = "full"
	}
	if errors.Is(err, ErrShardCount) {
		label = "shard_count"
	}
	c.add("rejected_"+label, 1)
}

func (c Counters) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
