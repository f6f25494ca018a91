package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// WatchConfig says how the agent keeps watched names fresh. The zero value
// works; each field's comment gives its default.
//
// Cost: each name being watched (by a blocked watch, or a DNS or watch
// query within IdleAfter) costs one find per Refresh: on a settled network
// a repeated find asks the 5 storers that agreed last time (5 requests and
// 5 answers) and pings every endpoint of the instances it finds (one TCP
// connect each). All names together make at most MaxFindRate finds a
// second; beyond Refresh × MaxFindRate names, each is refreshed less often.
type WatchConfig struct {
	// Refresh is the period of a watched name's background find; 0 means 1 s.
	Refresh time.Duration
	// MaxFindRate bounds the background finds of all names, per second; 0
	// means 20.
	MaxFindRate float64
	// FindTimeout bounds one find; 0 means 10 s.
	FindTimeout time.Duration
	// MaxNames is how many names (with their trust settings) are kept
	// fresh at once; 0 means 1024. A new name past it takes the place of
	// the one asked for least recently that no watch blocks on, and is
	// refused with ErrWatchBusy when there is none.
	MaxNames int
	// ColdFinds bounds the first finds of new names running at once; 0
	// means 16. A name's first find is what a cold DNS query waits for.
	ColdFinds int
	// IdleAfter drops a name nobody has asked for in this long (and no
	// watch blocks on); 0 means 2 min. IdleEmpty is the same for a name
	// with no instance; 0 means 10 s.
	IdleAfter, IdleEmpty time.Duration
	// DefaultWait and MaxWait are how long a watch blocks when it does not
	// say (wait=) and at most; 0 means 5 min and 10 min.
	DefaultWait, MaxWait time.Duration
}

func (c *WatchConfig) defaults() {
	if c.Refresh <= 0 {
		c.Refresh = time.Second
	}
	if c.MaxFindRate <= 0 {
		c.MaxFindRate = 20
	}
	if c.FindTimeout <= 0 {
		c.FindTimeout = 10 * time.Second
	}
	if c.MaxNames <= 0 {
		c.MaxNames = 1024
	}
	if c.ColdFinds <= 0 {
		c.ColdFinds = 16
	}
	if c.IdleAfter <= 0 {
		c.IdleAfter = 2 * time.Minute
	}
	if c.IdleEmpty <= 0 {
		c.IdleEmpty = 10 * time.Second
	}
	if c.DefaultWait <= 0 {
		c.DefaultWait = 5 * time.Minute
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 10 * time.Minute
	}
	c.DefaultWait = min(c.DefaultWait, c.MaxWait)
}

// WatchResult is a cell's live instance set as a watch returns it.
type WatchResult struct {
	Name string `json:"name"`
	// Index identifies the set: it changes when an instance is added,
	// withdrawn or expires, or when one's endpoints, region, manifest,
	// publisher, trust or reachability change, and not when a record is
	// merely republished. It is opaque: compare it for equality only. The
	// same set has the same index, across agent restarts too.
	Index     uint64          `json:"index"`
	Instances []WatchInstance `json:"instances"`
	Pinned    bool            `json:"pinned"`
	Untrusted int             `json:"untrusted,omitempty"`
	Offline   bool            `json:"offline,omitempty"`
	Refreshed time.Time       `json:"refreshed"` // when the agent last looked
}

// WatchInstance is an Instance with its signed record.
type WatchInstance struct {
	Instance
	// Record is the instance's signed record (docs/records.md), base64 in
	// JSON, for clients that verify what they are told.
	Record []byte `json:"record"`
}

// ErrWatchBusy is returned when the agent keeps as many names fresh as it
// may and none can make room.
var ErrWatchBusy = errors.New("node: the agent watches as many names as it may")

// watchHub keeps watched names fresh: one goroutine per name, which finds
// it every Refresh and wakes the watches blocked on it when its set
// changes.
type watchHub struct {
	n        *Node
	cfg      WatchConfig
	trustFor func(name string) []ed25519.PublicKey // the agent's pins
	ctx      context.Context                       // ends on close
	cancel   context.CancelFunc
	cold     chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	entries map[string]*watchEntry
	closed  bool
}

type watchEntry struct {
	h          *watchHub
	key, name  string
	agentTrust bool // opts come from the agent's pins
	poke       chan struct{}
	stop       chan struct{}

	mu       sync.Mutex
	opts     FindOptions
	res      *WatchResult
	err      error
	ready    chan struct{} // closed once the first find ends
	changed  chan struct{} // closed when res's index changes, then replaced
	wanted   time.Time     // last asked for
	watchers int           // watches blocked on it
}

func newWatchHub(n *Node, cfg WatchConfig, trustFor func(string) []ed25519.PublicKey) *watchHub {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &watchHub{n: n, cfg: cfg, trustFor: trustFor, ctx: ctx, cancel: cancel,
		cold: make(chan struct{}, cfg.ColdFinds), entries: map[string]*watchEntry{}}
}

// close stops every name's finds and ends the watches blocked on them
// (each returns the set it has).
func (h *watchHub) close() {
	h.mu.Lock()
	h.closed = true
	for k, e := range h.entries {
		delete(h.entries, k)
		close(e.stop)
	}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// trust is how a query names its trust settings: the agent's pins for the
// name (agent), or the publishers and all flag it gives.
type trust struct {
	agent bool
	opts  FindOptions
}

func (t trust) key(name string) string {
	if t.agent {
		return name + "|agent"
	}
	keys := make([]string, len(t.opts.Publishers))
	for i, p := range t.opts.Publishers {
		keys[i] = base64.StdEncoding.EncodeToString(p)
	}
	slices.Sort(keys)
	return name + "|" + strings.Join(slices.Compact(keys), ",") + "|" + strconv.FormatBool(t.opts.All && len(keys) > 0)
}

// entry returns the entry of name and t, starting one if needed.
func (h *watchHub) entry(name string, t trust) (*watchEntry, error) {
	key := t.key(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if e, ok := h.entries[key]; ok {
		return e, nil
	}
	if len(h.entries) >= h.cfg.MaxNames && !h.evictLocked() {
		return nil, ErrWatchBusy
	}
	opts := t.opts
	if t.agent {
		opts = FindOptions{Publishers: h.trustFor(name)}
	}
	e := &watchEntry{h: h, key: key, name: name, agentTrust: t.agent, opts: opts, poke: make(chan struct{}, 1),
		stop: make(chan struct{}), ready: make(chan struct{}), changed: make(chan struct{}), wanted: time.Now()}
	h.entries[key] = e
	h.wg.Add(1)
	go e.run()
	return e, nil
}

// evictLocked drops the entry asked for least recently that no watch
// blocks on; h.mu is held.
func (h *watchHub) evictLocked() bool {
	var victim *watchEntry
	var oldest time.Time
	for _, e := range h.entries {
		e.mu.Lock()
		w, t := e.watchers, e.wanted
		e.mu.Unlock()
		if w == 0 && (victim == nil || t.Before(oldest)) {
			victim, oldest = e, t
		}
	}
	if victim == nil {
		return false
	}
	delete(h.entries, victim.key)
	close(victim.stop)
	return true
}

// remove drops e if it is still the entry of its key.
func (h *watchHub) remove(e *watchEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.entries[e.key] == e {
		delete(h.entries, e.key)
		close(e.stop)
	}
}

// forget drops every entry of name (benchmarks use it for cold queries).
func (h *watchHub) forget(name string) {
	for _, e := range h.named(name) {
		h.remove(e)
	}
}

func (h *watchHub) named(name string) []*watchEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*watchEntry
	for _, e := range h.entries {
		if e.name == name {
			out = append(out, e)
		}
	}
	return out
}

// poke makes every entry of name find it now (a cell registered here).
func (h *watchHub) poke(name string) {
	for _, e := range h.named(name) {
		select {
		case e.poke <- struct{}{}:
		default:
		}
	}
}

// retrust reads the agent's pins again for the entries that use them.
func (h *watchHub) retrust() {
	h.mu.Lock()
	var es []*watchEntry
	for _, e := range h.entries {
		if e.agentTrust {
			es = append(es, e)
		}
	}
	h.mu.Unlock()
	for _, e := range es {
		pubs := h.trustFor(e.name)
		e.mu.Lock()
		same := slices.EqualFunc(pubs, e.opts.Publishers, func(x, y ed25519.PublicKey) bool { return x.Equal(y) })
		e.opts = FindOptions{Publishers: pubs}
		e.mu.Unlock()
		if !same {
			select {
			case e.poke <- struct{}{}:
			default:
			}
		}
	}
}

func (h *watchHub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// current returns the name's set, waiting for its first find when the
// agent did not have it (a cold query).
func (h *watchHub) current(ctx context.Context, name string, t trust) (*WatchResult, error) {
	e, err := h.entry(name, t)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.wanted = time.Now()
	e.mu.Unlock()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.res, e.err
}

// watch returns the name's set as soon as its index differs from index,
// or the set as it is when ctx ends (a watch that timed out). It returns
// an error only when the name's first find failed or had not ended.
func (h *watchHub) watch(ctx context.Context, name string, t trust, index uint64) (*WatchResult, error) {
	e, err := h.entry(name, t)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.watchers++
	e.wanted = time.Now()
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.watchers--
		e.wanted = time.Now()
		e.mu.Unlock()
	}()
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.stop:
		return nil, ErrClosed
	}
	for {
		e.mu.Lock()
		res, err, ch := e.res, e.err, e.changed
		e.mu.Unlock()
		if res == nil {
			return nil, err
		}
		if res.Index != index {
			return res, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return res, nil
		case <-e.stop:
			return res, nil
		}
	}
}

// run finds the entry's name every interval until it is idle or the hub
// closes.
func (e *watchEntry) run() {
	h := e.h
	defer h.wg.Done()
	// The first find is the one a cold query waits for.
	select {
	case h.cold <- struct{}{}:
		e.refresh()
		<-h.cold
	case <-h.ctx.Done():
	case <-e.stop:
	}
	e.mu.Lock()
	if e.res == nil && e.err == nil {
		e.err = ErrClosed
	}
	e.mu.Unlock()
	close(e.ready)
	for {
		if h.ctx.Err() != nil {
			return
		}
		n := h.size()
		iv := max(h.cfg.Refresh, time.Duration(float64(n)/h.cfg.MaxFindRate*float64(time.Second)))
		iv = time.Duration(float64(iv) * (0.9 + 0.2*rand.Float64()))
		t := time.NewTimer(iv)
		var exp <-chan time.Time
		var et *time.Timer
		if d := e.nextExpiry(); d > 0 && d < iv {
			et = time.NewTimer(d)
			exp = et.C
		}
		expired, stopped := false, false
		select {
		case <-h.ctx.Done():
			stopped = true
		case <-e.stop:
			stopped = true
		case <-exp:
			expired = true
		case <-e.poke:
		case <-t.C:
		}
		t.Stop()
		if et != nil {
			et.Stop()
		}
		switch {
		case stopped:
			return
		case expired:
			e.prune()
			continue
		}
		if e.idle() {
			h.remove(e)
			return
		}
		e.refresh()
	}
}

func (e *watchEntry) idle() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	limit := e.h.cfg.IdleAfter
	if e.res == nil || len(e.res.Instances) == 0 {
		limit = e.h.cfg.IdleEmpty
	}
	return e.watchers == 0 && time.Since(e.wanted) > limit
}

// refresh finds the name and publishes the result.
func (e *watchEntry) refresh() {
	h := e.h
	e.mu.Lock()
	opts := e.opts
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.FindTimeout)
	fr, err := h.n.FindWith(ctx, e.name, opts)
	cancel()
	if err != nil {
		if h.ctx.Err() == nil {
			h.n.log.Debug("watch: find failed", "cell", e.name, "err", err)
		}
		e.mu.Lock()
		if e.res == nil {
			e.err = err
		}
		e.mu.Unlock()
		return
	}
	e.set(h.n.watchResult(fr))
}

// set replaces the entry's result and wakes the watches when its index
// changed.
func (e *watchEntry) set(res *WatchResult) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.res
	e.res, e.err = res, nil
	if old == nil || old.Index != res.Index {
		close(e.changed)
		e.changed = make(chan struct{})
	}
}

// nextExpiry is how long until the first instance of the result expires
// (Expires + record.MaxSkew, when finds stop accepting it); 0 for none.
func (e *watchEntry) nextExpiry() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.res == nil {
		return 0
	}
	var first time.Time
	for _, in := range e.res.Instances {
		if first.IsZero() || in.Expires.Before(first) {
			first = in.Expires
		}
	}
	if first.IsZero() {
		return 0
	}
	return max(first.Add(record.MaxSkew).Sub(e.h.n.now())+time.Millisecond, time.Millisecond)
}

// prune drops the instances whose records have expired from the result,
// without a find.
func (e *watchEntry) prune() {
	e.mu.Lock()
	if e.res == nil {
		e.mu.Unlock()
		return
	}
	now := e.h.n.now()
	res := *e.res
	res.Instances = slices.DeleteFunc(slices.Clone(res.Instances), func(in WatchInstance) bool {
		return now.After(in.Expires.Add(record.MaxSkew))
	})
	same := len(res.Instances) == len(e.res.Instances)
	e.mu.Unlock()
	if same {
		return
	}
	res.Index = setIndex(res.Instances)
	e.set(&res)
}

// watchResult turns a find's result into a watch's, with each instance's
// signed record and the set's index.
func (n *Node) watchResult(fr *FindResult) *WatchResult {
	res := &WatchResult{Name: fr.Name, Pinned: fr.Pinned, Untrusted: fr.Untrusted, Offline: fr.Offline,
		Refreshed: n.now(), Instances: make([]WatchInstance, len(fr.Instances))}
	// The find just merged these records (Node.recent); a record is picked
	// by peer and sequence number, so it is the one the instance shows.
	raws := map[string][]byte{}
	for _, raw := range n.recent.get(fr.Name) {
		if r, err := record.Decode(raw); err == nil {
			raws[r.Peer.String()+"/"+strconv.FormatUint(r.Seq, 10)] = raw
		}
	}
	for i, in := range fr.Instances {
		res.Instances[i] = WatchInstance{Instance: in, Record: raws[in.Peer+"/"+strconv.FormatUint(in.Seq, 10)]}
	}
	res.Index = setIndex(res.Instances)
	return res
}

// setIndex hashes what a watcher cares about in a set (see
// WatchResult.Index) into 53 bits (exact in a JSON number anywhere), never 0.
func setIndex(ins []WatchInstance) uint64 {
	keys := make([]string, len(ins))
	for i, in := range ins {
		eps := slices.Clone(in.Endpoints)
		slices.Sort(eps)
		keys[i] = strings.Join([]string{in.Peer, strings.Join(eps, ","), in.Region, in.Manifest, in.Publisher,
			strconv.FormatBool(in.Trusted), strconv.FormatBool(in.Reachable)}, "\x00")
	}
	slices.Sort(keys)
	f := fnv.New64a()
	for _, k := range keys {
		f.Write([]byte(k))
		f.Write([]byte{0xff})
	}
	v := f.Sum64() & (1<<53 - 1)
	if v == 0 {
		v = 1
	}
	return v
}
