package dht

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// Sharded sets. A cell with more instances than a set holds spreads them
// over S sets (shards) under derived keys (ShardKey): an instance belongs
// in shard record.ShardOf(peer, S), where S, a power of two up to
// record.MaxShards, is signed in its record. Shard 0 is the set's own key,
// so a cell of one shard is stored as before sharding.
//
// Storers advise S (Store.Advice): the largest count among a set's live
// records, doubled once records with that count fill three quarters of
// the set. They refuse a record signed with less (ErrShardCount), and a
// publisher signs again with the advice at once (PublishSigned). A
// shard that grows splits: half its instances stay, carrying the doubled
// count, half move to shard s+S. So every shard in use can be reached from
// shard 0: a finder reads shard 0, learns S from its valid records and
// its storers' advice, asks shards 1 to S-1 at once, and asks more if one
// of them shows a larger count (see fanOut). Records of an instance that
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

// fanOut gathers every shard of one set (the name's, or a publisher's for
// the name) in one space: shard 0 first, then every shard below the
// largest shard count it learns of, each as soon as it learns of it.
type fanOut struct {
	d    *Node
	ctx  context.Context
	sp   *space
	name string
	pub  ed25519.PublicKey
	now  func() time.Time
	add  func(shard int, got [][]byte, gs gatherStats)

	wg sync.WaitGroup
	mu sync.Mutex
	n  int // shards started: 0 to n-1
}

// learn starts the gathers of the shards below n not started yet. A count
// that is not a power of two up to record.MaxShards (a storer's advice
// is not signed) is ignored.
func (f *fanOut) learn(n int) {
	if record.CheckShards(n) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ; f.n < n; f.n++ {
		shard := f.n
		f.wg.Go(func() {
			got, gs := f.d.gather(f.ctx, f.sp, f.name, f.pub, shard, f.now, f.learn)
			f.add(shard, got, gs)
		})
	}
}

// count returns how many shards were asked.
func (f *fanOut) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
