package dht

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrFull is returned by Store.Put when a name or the whole store holds as
// many live records as it may.
var ErrFull = errors.New("dht: store full")

// StoreConfig bounds a Store. The zero value works.
type StoreConfig struct {
	// MaxPerName is the most records kept for one cell name; 0 means 256.
	MaxPerName int
	// MaxNames is the most cell names kept; 0 means 65536.
	MaxNames int
	// Now is the store's clock; nil means time.Now.
	Now func() time.Time
}

// Store is the set-valued record store a DHT server keeps: for each cell
// name, the newest valid record of each publishing peer, until it expires.
// It is safe for concurrent use.
type Store struct {
	cfg StoreConfig

	mu     sync.Mutex
	byName map[string]map[peer.ID]*Record
	count  Counters
}

// NewStore returns an empty store.
func NewStore(cfg StoreConfig) *Store {
	if cfg.MaxPerName <= 0 {
		cfg.MaxPerName = 256
	}
	if cfg.MaxNames <= 0 {
		cfg.MaxNames = 65536
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg, byName: make(map[string]map[peer.ID]*Record), count: newCounters()}
}

// bucket names the set a record is kept in: the cell name's set, or the
// set of one publisher's records for the name.
func bucket(name string, publisher ed25519.PublicKey) string {
	if publisher == nil {
		return name
	}
	return name + "@" + hex.EncodeToString(publisher)
}

// Put verifies raw as a record of name and stores it in the name's set,
// replacing the node's older record. A record whose sequence number is not
// above the held one is rejected with ErrStale, unless it is the identical
// record. Every rejection is counted under its Reason.
func (s *Store) Put(name string, raw []byte) (*Record, error) { return s.PutFor(name, nil, raw) }

// PutFor is Put into the set of the publisher's records for name; the
// record must be delegated by publisher (ErrWrongPublisher). A nil
// publisher means the name's set, which takes any valid record.
func (s *Store) PutFor(name string, publisher ed25519.PublicKey, raw []byte) (*Record, error) {
	now := s.cfg.Now()
	r, err := Verify(raw, name, now)
	if err == nil && publisher != nil && !bytes.Equal(r.Publisher(), publisher) {
		err = ErrWrongPublisher
	}
	if err != nil {
		s.count.reject(err)
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name = bucket(name, publisher)
	set := s.byName[name]
	if old, ok := set[r.Peer]; ok {
		if old.Seq == r.Seq && string(old.raw) == string(r.raw) {
			return old, nil
		}
		if old.Seq >= r.Seq {
			err := fmt.Errorf("%w: seq %d, holding %d", ErrStale, r.Seq, old.Seq)
			s.count.reject(err)
			return nil, err
		}
	}
	if set == nil {
		if len(s.byName) >= s.cfg.MaxNames {
			s.gcLocked(now)
			if len(s.byName) >= s.cfg.MaxNames {
				s.count.reject(ErrFull)
				return nil, fmt.Errorf("%w: %d names", ErrFull, len(s.byName))
			}
		}
		set = make(map[peer.ID]*Record)
		s.byName[name] = set
	}
	if _, ok := set[r.Peer]; !ok && len(set) >= s.cfg.MaxPerName {
		pruneSet(set, now)
		if len(set) >= s.cfg.MaxPerName {
			s.count.reject(ErrFull)
			return nil, fmt.Errorf("%w: %d records for %s", ErrFull, len(set), name)
		}
	}
	set[r.Peer] = r
	s.count.add("stored", 1)
	return r, nil
}

// Get returns the live records of name's set, withdrawals included,
// ordered by peer ID. Each is checked against the clock again before it is
// returned; expired ones are dropped and counted.
func (s *Store) Get(name string) []*Record { return s.GetFor(name, nil) }

// GetFor is Get for the set of the publisher's records for name.
func (s *Store) GetFor(name string, publisher ed25519.PublicKey) []*Record {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	name = bucket(name, publisher)
	set := s.byName[name]
	out := make([]*Record, 0, len(set))
	for id, r := range set {
		if err := r.Check(now); err != nil {
			delete(set, id)
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

// GC drops every expired record and returns how many it dropped.
func (s *Store) GC() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gcLocked(s.cfg.Now())
}

func (s *Store) gcLocked(now time.Time) int {
	n := 0
	for name, set := range s.byName {
		n += pruneSet(set, now)
		if len(set) == 0 {
			delete(s.byName, name)
		}
	}
	return n
}

func pruneSet(set map[peer.ID]*Record, now time.Time) int {
	n := 0
	for id, r := range set {
		if r.Check(now) != nil {
			delete(set, id)
			n++
		}
	}
	return n
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
	label := Reason(err)
	if errors.Is(err, ErrFull) {
		label = "full"
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
