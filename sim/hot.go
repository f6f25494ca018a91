package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
)

// HotName replaces the find phase with one hot name: FindsPerSecond finds
// of cell 0 every simulated second for Duration, each from a random
// finder, run Parallel at a time. The network's clock is frozen while one
// second's finds run and moved forward one second after them, so that what
// the nodes count in time (the storers' per-peer rate limit, record
// lifetimes, the result cache) sees the scenario's rate, not the pace at
// which this machine runs the finds. The staleness phase does not run.
type HotName struct {
	// FindsPerSecond is how many finds of the hot name start in each
	// simulated second; 1 to 100000.
	FindsPerSecond int `json:"finds_per_second"`
	// Duration is the simulated time the finds cover, whole seconds; 0
	// means 10 s, at most 10 minutes.
	Duration time.Duration `json:"duration,omitempty"`
	// Parallel is how many finds run at once; 0 means 32, at most 1024.
	Parallel int `json:"parallel,omitempty"`
	// Finders is how many distinct nodes the finds come from, drawn from
	// the seed; 0 means every live honest node.
	Finders int `json:"finders,omitempty"`
	// FindCache is each node's result cache (dht.Config.FindCache): how
	// long a find is answered from the node's last find of the name; 0
	// means none, at most 60 s.
	FindCache time.Duration `json:"find_cache,omitempty"`
	// PathCache makes every find whose answers agreed store the set at
	// the closest peer it asked that lacked part of it
	// (dht.Config.PathCache).
	PathCache bool `json:"path_cache,omitempty"`
	// MaxServerRate, when not 0, is the bound the run is held to: no DHT
	// server may receive more requests (every kind) than this in any one
	// simulated second after the cold start (HotReport.SteadyFrom).
	// HotReport.WithinBound says whether it held.
	MaxServerRate float64 `json:"max_server_rate,omitempty"`
}

// Defaults and limits of HotName.
const (
	DefaultHotDuration = 10 * time.Second
	DefaultHotParallel = 32
	maxHotRate         = 100000
	maxHotParallel     = 1024
	maxHotDuration     = 10 * time.Minute
)

// hotFindCache is the nodes' dht.Config.FindCache: Hot.FindCache, or
// none.
func (s Scenario) hotFindCache() time.Duration {
	if s.Hot == nil {
		return 0
	}
	return s.Hot.FindCache
}

func (h HotName) withDefaults() HotName {
	if h.Duration == 0 {
		h.Duration = DefaultHotDuration
	}
	if h.Parallel == 0 {
		h.Parallel = DefaultHotParallel
	}
	return h
}

// validate reports the first field of h (after defaults) that is out of
// range; honest is the number of honest nodes.
func (h HotName) validate(honest int) error {
	h = h.withDefaults()
	switch {
	case h.FindsPerSecond < 1 || h.FindsPerSecond > maxHotRate:
		return fmt.Errorf("hot.finds_per_second %d, want 1 to %d", h.FindsPerSecond, maxHotRate)
	case h.Duration < time.Second || h.Duration > maxHotDuration || h.Duration%time.Second != 0:
		return fmt.Errorf("hot.duration %v, want whole seconds from 1s to %v", h.Duration, maxHotDuration)
	case h.Parallel < 1 || h.Parallel > maxHotParallel:
		return fmt.Errorf("hot.parallel %d, want 1 to %d", h.Parallel, maxHotParallel)
	case h.Finders < 0 || h.Finders > honest:
		return fmt.Errorf("hot.finders %d, want 0 (every node) to the honest nodes (%d)", h.Finders, honest)
	case h.FindCache < 0 || h.FindCache > record.MaxLifetime:
		return fmt.Errorf("hot.find_cache %v, want 0 to %v", h.FindCache, record.MaxLifetime)
	case h.MaxServerRate < 0:
		return fmt.Errorf("negative hot.max_server_rate %g", h.MaxServerRate)
	}
	return nil
}

type hotJSON HotName

func (h *HotName) durations() map[string]*time.Duration {
	return map[string]*time.Duration{"duration": &h.Duration, "find_cache": &h.FindCache}
}

// MarshalJSON writes Duration and FindCache as duration strings.
func (h HotName) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(hotJSON(h))
	if err != nil {
		return nil, err
	}
	return withDurations(b, h.durations())
}

// UnmarshalJSON reads Duration and FindCache as duration strings and
// rejects unknown fields.
func (h *HotName) UnmarshalJSON(b []byte) error {
	return strictWithDurations(b, (*hotJSON)(h), h.durations())
}

// HotReport is what the hot-name phase measured. Rates are per simulated
// second. The storers are the BucketSize live nodes closest to the hot
// name's key (those a publish stores at); the servers are every live
// honest node.
type HotReport struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"sim_seconds"`
	// WallSeconds is the wall-clock time the phase took on this machine.
	WallSeconds float64 `json:"wall_seconds"`
	Finders     int     `json:"finders"`
	Finds       int     `json:"finds"`
	Misses      int     `json:"misses"` // finds that failed or missed an instance
	Errors      int     `json:"errors"`
	Success     float64 `json:"success_rate"`
	FirstMiss   string  `json:"first_miss,omitempty"`
	// FindsPerSecond is Finds over Seconds, the rate achieved.
	FindsPerSecond float64 `json:"finds_per_second"`
	// NetworkFinds are the finds that sent messages: not answered from
	// the finder's result cache.
	NetworkFinds int `json:"network_finds"`
	// CacheHits are finds answered by the result cache (each a find
	// that sent nothing); PathCacheSent and PathCacheStored are the
	// records finders sent to, and had taken by, peers on their path.
	CacheHits       uint64 `json:"cache_hits"`
	PathCacheSent   uint64 `json:"path_cache_sent"`
	PathCacheStored uint64 `json:"path_cache_stored"`
	// Holders is how many live nodes held a record of the hot name at the
	// end: the storers, the likely storers that took early PUTs, and
	// path caches.
	Holders int `json:"holders"`
	// RateLimited is how many requests servers refused under their
	// per-peer rate limit during the phase.
	RateLimited uint64 `json:"rate_limited"`
	// MessagesPerFind is the requests every node sent during the finds,
	// republishes left out, over Finds.
	MessagesPerFind float64 `json:"messages_per_find"`
	// Storers' and servers' received requests per second, mean over the
	// phase: every kind, and cell GETs alone.
	Storers        int    `json:"storers"`
	StorerMessages Spread `json:"storer_messages_per_second"`
	StorerGets     Spread `json:"storer_gets_per_second"`
	ServerMessages Spread `json:"server_messages_per_second"`
	ServerGets     Spread `json:"server_gets_per_second"`
	// PeakMessages and PeakGets are the most requests, and cell GETs, any
	// one server received in any one simulated second.
	PeakMessages float64 `json:"peak_server_messages_per_second"`
	PeakGets     float64 `json:"peak_server_gets_per_second"`
	// SteadyPeakMessages and SteadyPeakGets are the same from second
	// SteadyFrom on, after the cold start: the first second (every
	// finder's first find runs a lookup) and one find-cache life more
	// (the caches filled in the first second expire together).
	SteadyFrom         int     `json:"steady_from_second"`
	SteadyPeakMessages float64 `json:"steady_peak_server_messages_per_second"`
	SteadyPeakGets     float64 `json:"steady_peak_server_gets_per_second"`
	// Bound is HotName.MaxServerRate, and WithinBound whether
	// SteadyPeakMessages stayed at or under it (true when there is no
	// bound).
	Bound       float64 `json:"bound,omitempty"`
	WithinBound bool    `json:"within_bound"`
	// Find is the wall-clock time of a find, run Parallel at a time on
	// this machine's CPUs: a figure of the simulator, not of the network.
	Find Latency `json:"find_wall"`
}

// hot is measure's branch for Scenario.Hot: the hot-name phase instead of
// the find and staleness phases.
func (r *run) hot() ([]*Report, error) {
	ann0 := r.acc[0].announces
	hr, load, err := r.hotPhase()
	if err != nil {
		return nil, err
	}
	rep := r.reps[0]
	rep.Hot = hr
	rep.Finds, rep.Misses, rep.Errors, rep.FirstMiss = hr.Finds, hr.Misses, hr.Errors, hr.FirstMiss
	if sec := load.SimSeconds; sec > 0 {
		load.AnnouncesPerSecond = float64(r.acc[0].announces-ann0) / sec
		load.FindsPerSecond = float64(hr.Finds) / sec
	}
	load.PeakRSSBytes = float64(peakRSS())
	rep.Load = load
	rep.MemoryEnd = memUse().perNode(r.nw.mem0, len(r.nw.liveHonest()))
	r.finish(rep, r.acc[0])
	return r.reps, nil
}

// hotPhase runs the hot-name phase (Scenario.Hot) on the announced
// instances and returns its report and the servers' load over it.
func (r *run) hotPhase() (*HotReport, Load, error) {
	nw := r.nw
	h := nw.sc.Hot.withDefaults()
	name := cellName(0)
	finders := r.finders()
	if h.Finders > 0 && h.Finders < len(finders) {
		perm := r.rng.Perm(len(finders))[:h.Finders]
		slices.Sort(perm)
		picked := make([]int, len(perm))
		for k, j := range perm {
			picked[k] = finders[j]
		}
		finders = picked
	}
	r.note("hot finders %v", finders)
	r.progress(fmt.Sprintf("hot name %s: warming %d finders", name, len(finders)))
	// The finders' warm-up lookups stand for a long-running node's table
	// refreshes: they come before the phase and are not counted.
	sem := make(chan struct{}, setupParallel)
	var wg sync.WaitGroup
	for _, f := range finders {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			nw.warm(r.ctx, nw.member(f))
		})
	}
	wg.Wait()
	for _, f := range finders {
		r.settle(nw.member(f))
	}
	if err := r.ctx.Err(); err != nil {
		return nil, Load{}, fmt.Errorf("sim: hot: %w", err)
	}

	storers := nw.closestLive(record.Key(name), nw.sc.BucketSize)
	rep := &HotReport{Name: name, Finders: len(finders), Storers: len(storers), Bound: h.MaxServerRate}
	counters0 := nw.counterSum()
	nw.clock.Freeze()
	defer nw.clock.Thaw()
	mark := nw.markLoad()
	wall0 := time.Now()
	prev := mark
	var sent tally
	var mu sync.Mutex
	var took []time.Duration
	seconds := int(h.Duration / time.Second)
	// The first second, and the first find-cache life, are a cold start:
	// every finder's first find runs a lookup, and the caches it filled
	// all expire together one cache life later.
	warmSecs := max(1, int((h.FindCache+time.Second-1)/time.Second)+1)
	rep.SteadyFrom = min(warmSecs, seconds)
	r.progress(fmt.Sprintf("hot name %s: %d finds/s for %d s from %d finders, %d at once (find cache %v, path cache %v)",
		name, h.FindsPerSecond, seconds, len(finders), h.Parallel, h.FindCache, h.PathCache))
	for sec := range seconds {
		if err := r.republish(); err != nil {
			return nil, Load{}, err
		}
		before := nw.sentSum()
		sem := make(chan struct{}, h.Parallel)
		for range h.FindsPerSecond {
			from := finders[r.rng.IntN(len(finders))]
			r.note("hot %d %d", sec, from)
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				want, _ := r.expected(from, name)
				start := time.Now()
				got, st, err := nw.find(r.ctx, SetStore, from, name, want, nil)
				d := time.Since(start)
				missed := err != nil
				for p := range want {
					missed = missed || !got[p]
				}
				mu.Lock()
				defer mu.Unlock()
				took = append(took, d)
				rep.Finds++
				if !st.FromCache {
					rep.NetworkFinds++
				}
				if err != nil {
					rep.Errors++
				}
				if missed {
					rep.Misses++
					if rep.FirstMiss == "" {
						rep.FirstMiss = fmt.Sprintf("second %d, node %d: %d of %d instances, err %v; %+v", sec, from, len(got), len(want), err, st)
					}
				}
			})
		}
		wg.Wait()
		if err := r.ctx.Err(); err != nil {
			return nil, Load{}, fmt.Errorf("sim: hot: %w", err)
		}
		sent = sent.add(nw.sentSum().sub(before))
		cur := nw.markLoad()
		for i := range cur.t {
			d := cur.t[i]
			if i < len(prev.t) {
				d = d.sub(prev.t[i])
			}
			if !nw.Alive(i) || !nw.Honest(i) {
				continue
			}
			rep.PeakMessages = max(rep.PeakMessages, float64(d.total()))
			rep.PeakGets = max(rep.PeakGets, float64(d.msgs[kindCellGet]))
			if sec >= warmSecs {
				rep.SteadyPeakMessages = max(rep.SteadyPeakMessages, float64(d.total()))
				rep.SteadyPeakGets = max(rep.SteadyPeakGets, float64(d.msgs[kindCellGet]))
			}
		}
		prev = cur
		nw.clock.Advance(time.Second)
		if (sec+1)%max(1, seconds/10) == 0 {
			r.progress(fmt.Sprintf("hot: %d/%d s, %d finds, %d misses, peak %g msgs/s at one server", sec+1, seconds, rep.Finds, rep.Misses, rep.PeakMessages))
		}
	}
	end := nw.markLoad()
	rep.WallSeconds = time.Since(wall0).Seconds()
	rep.Seconds = end.at.Sub(mark.at).Seconds()
	rep.FindsPerSecond = float64(rep.Finds) / rep.Seconds
	if rep.Finds > 0 {
		rep.Success = float64(rep.Finds-rep.Misses) / float64(rep.Finds)
		rep.MessagesPerFind = float64(sent.total()) / float64(rep.Finds)
	}
	rep.Find = latency(took, 0)
	counters := nw.counterSum()
	rep.CacheHits = counters["find_cache_hits"] - counters0["find_cache_hits"]
	rep.PathCacheSent = counters["path_cache_sent"] - counters0["path_cache_sent"]
	rep.PathCacheStored = counters["path_cache_stored"] - counters0["path_cache_stored"]
	rep.RateLimited = counters["rate_limited"] - counters0["rate_limited"]
	rates := func(idx []int) (msgs, gets Spread) {
		var m, g []float64
		for _, i := range idx {
			d := end.t[i].sub(mark.t[i])
			m = append(m, float64(d.total())/rep.Seconds)
			g = append(g, float64(d.msgs[kindCellGet])/rep.Seconds)
		}
		return spread(m), spread(g)
	}
	rep.StorerMessages, rep.StorerGets = rates(storers)
	var servers []int
	for _, i := range nw.liveHonest() {
		if i < len(mark.t) {
			servers = append(servers, i)
		}
		if len(nw.Node(i).DHT().Store().Get(name)) > 0 {
			rep.Holders++
		}
	}
	rep.ServerMessages, rep.ServerGets = rates(servers)
	rep.WithinBound = h.MaxServerRate == 0 || rep.SteadyPeakMessages <= h.MaxServerRate
	return rep, nw.load(mark, end), nil
}

// closestLive returns the n live honest nodes closest to the DHT key,
// closest first.
func (nw *Network) closestLive(key string, n int) []int {
	target := kb.ConvertKey(key)
	live := nw.liveHonest()
	ids := map[int]kb.ID{}
	for _, i := range live {
		ids[i] = kb.ConvertPeerID(nw.Node(i).ID())
	}
	sort.Slice(live, func(a, b int) bool {
		return kbCloser(target, ids[live[a]], ids[live[b]])
	})
	return live[:min(n, len(live))]
}

func kbCloser(key, a, b kb.ID) bool {
	for i := range key {
		x, y := key[i]^a[i], key[i]^b[i]
		if x != y {
			return x < y
		}
	}
	return false
}

// sentSum is the requests every node has sent so far.
func (nw *Network) sentSum() tally {
	nw.mu.RLock()
	members := slices.Clone(nw.members)
	nw.mu.RUnlock()
	var t tally
	for _, m := range members {
		t = t.add(m.meter.snapshot())
	}
	return t
}

// counterSum sums the DHT counters of every node.
func (nw *Network) counterSum() map[string]uint64 {
	out := map[string]uint64{}
	for i := range nw.Len() {
		for k, v := range nw.Node(i).DHT().Counters() {
			out[k] += v
		}
	}
	return out
}

// writeText writes the hot-name report for people.
func (h *HotReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "  hot name   %s: %d finds over %.0f s simulated (%.0f finds/s; %.0f s wall) from %d finders: %.2f%% success (%d misses, %d errors)\n",
		h.Name, h.Finds, h.Seconds, h.FindsPerSecond, h.WallSeconds, h.Finders, 100*h.Success, h.Misses, h.Errors)
	fmt.Fprintf(w, "    caches       %d finds sent messages, %d answered by the finder's cache; %d records sent to path caches, %d taken; %d nodes hold the name\n",
		h.NetworkFinds, h.CacheHits, h.PathCacheSent, h.PathCacheStored, h.Holders)
	fmt.Fprintf(w, "    storers      %d: %s msgs/s, %s GETs/s (mean/p50/p99/max)\n", h.Storers, h.StorerMessages.text(), h.StorerGets.text())
	fmt.Fprintf(w, "    servers      %s msgs/s, %s GETs/s\n", h.ServerMessages.text(), h.ServerGets.text())
	fmt.Fprintf(w, "    peak         at one server in one second: %.0f msgs, %.0f GETs; from second %d on: %.0f msgs, %.0f GETs\n",
		h.PeakMessages, h.PeakGets, h.SteadyFrom, h.SteadyPeakMessages, h.SteadyPeakGets)
	bound := "no bound set"
	if h.Bound > 0 {
		bound = fmt.Sprintf("bound %.0f msgs/s per server from second %d: within %v", h.Bound, h.SteadyFrom, h.WithinBound)
	}
	fmt.Fprintf(w, "    %s; %d requests rate-limited; %.1f msgs per find; find wall time %s\n",
		bound, h.RateLimited, h.MessagesPerFind, h.Find.text(false))
}
