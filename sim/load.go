package sim

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// served wraps an inbound stream of the kad-dht or cell protocol so that
// the node's serving meter counts the requests read from it (by kind,
// cell requests split into GET and PUT), the bytes read (requests) as
// received and the bytes written (answers) as sent. Other protocols pass
// through.
func (h *meteredHost) served(pid protocol.ID, s network.Stream) network.Stream {
	if pid == "" {
		pid = s.Protocol()
	}
	switch {
	case pid == dht.ProtocolID:
		return &servedStream{Stream: s, m: h.self.served, f: framer{cellOps: true}}
	case strings.HasPrefix(string(pid), dht.ProtocolPrefix+"/kad/"):
		return &servedStream{Stream: s, m: h.self.served}
	}
	return s
}

// servedStream is the serving side of meteredStream: it frames what it
// reads.
type servedStream struct {
	network.Stream
	m *meter
	f framer
}

func (s *servedStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.m.received.Add(uint64(n))
	s.f.feed(p[:n], func(k kind) { s.m.msgs[k].Add(1) })
	return n, err
}

func (s *servedStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.m.sent.Add(uint64(n))
	return n, err
}

// Spread is the distribution of one figure over a set of nodes:
// nearest-rank percentiles, the largest value and the mean.
type Spread struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	slices.Sort(v)
	at := func(p float64) float64 {
		i := int(p*float64(len(v))+0.999999) - 1
		return v[min(max(i, 0), len(v)-1)]
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return Spread{P50: at(.5), P99: at(.99), Max: v[len(v)-1], Mean: sum / float64(len(v))}
}

// LoadGroup is the load that a group of DHT servers carried over the find
// phase, each figure a Spread over the group's nodes. Rates are per second
// of simulated time (Load.SimSeconds): the network's own pace, at which
// records are republished and finds arrive (Scenario.FindEvery); the
// simulator runs them at whatever wall-clock pace its CPUs allow.
type LoadGroup struct {
	Nodes int `json:"nodes"`
	// Requests received per second: every kind, then by kind
	// ("kad_find_node", "cell_get", "cell_put", ...).
	MessagesPerSecond Spread            `json:"messages_per_second"`
	ByKind            map[string]Spread `json:"by_kind,omitempty"`
	// Bytes of requests received, and of answers sent, per second.
	BytesInPerSecond  Spread `json:"bytes_in_per_second"`
	BytesOutPerSecond Spread `json:"bytes_out_per_second"`
	// Records held in the node's set store at the end of the find phase,
	// and their bytes (dht.Store.Len, dht.Store.Bytes).
	Records     Spread `json:"records"`
	RecordBytes Spread `json:"record_bytes"`
}

// Load is the per-server load of the find phase: every live honest DHT
// server, and apart from them the bootstrap nodes (Scenario.Bootstrap).
type Load struct {
	SimSeconds  float64 `json:"sim_seconds"`  // simulated time the phase covered
	WallSeconds float64 `json:"wall_seconds"` // wall-clock time it took
	// What caused it, per simulated second: announces and republishes,
	// finds (repeats included), nodes that joined and left.
	AnnouncesPerSecond float64    `json:"announces_per_second"`
	FindsPerSecond     float64    `json:"finds_per_second"`
	JoinsPerSecond     float64    `json:"joins_per_second"`
	LeavesPerSecond    float64    `json:"leaves_per_second"`
	Servers            LoadGroup  `json:"servers"`
	Bootstrap          *LoadGroup `json:"bootstrap,omitempty"`
	// PeakRSSBytes is the process's peak resident memory (VmHWM) at the
	// end of the run, for all nodes together.
	PeakRSSBytes float64 `json:"peak_rss_bytes"`
	// Shared is set when the run measured more than one store on the same
	// network (--baseline): the servers' figures are then the sum of every
	// store's traffic, the same in each store's report, while the causes
	// per second above are those of the first store alone.
	Shared bool `json:"shared,omitempty"`
}

// loadMark is every node's serving meter at one time.
type loadMark struct {
	at, wall time.Time
	t        []tally
}

func (nw *Network) markLoad() loadMark {
	nw.mu.RLock()
	members := slices.Clone(nw.members)
	nw.mu.RUnlock()
	lm := loadMark{at: nw.clock.Now(), wall: time.Now(), t: make([]tally, len(members))}
	for i, m := range members {
		lm.t[i] = m.served.snapshot()
	}
	return lm
}

// minus returns the tallies of lm less those of o, node by node (a node
// o does not have is left as it is).
func (lm loadMark) minus(o loadMark) loadMark {
	out := loadMark{at: lm.at, wall: lm.wall, t: slices.Clone(lm.t)}
	for i := range min(len(lm.t), len(o.t)) {
		out.t[i] = out.t[i].sub(o.t[i])
	}
	return out
}

// plus returns the tallies of lm and o added, node by node.
func (lm loadMark) plus(o loadMark) loadMark {
	out := loadMark{at: lm.at, wall: lm.wall, t: slices.Clone(lm.t)}
	for i, t := range o.t {
		if i < len(out.t) {
			out.t[i] = out.t[i].add(t)
		} else {
			out.t = append(out.t, t)
		}
	}
	return out
}

// load computes the load between two marks, over the nodes alive at the
// end (nodes that joined count from their join).
func (nw *Network) load(from, to loadMark) Load {
	sec := to.at.Sub(from.at).Seconds()
	l := Load{SimSeconds: sec, WallSeconds: to.wall.Sub(from.wall).Seconds(), PeakRSSBytes: float64(peakRSS())}
	if sec <= 0 {
		return l
	}
	boot := map[int]bool{}
	for _, i := range nw.bootstrapNodes() {
		boot[i] = true
	}
	var servers, boots []int
	for i := range to.t {
		if !nw.Alive(i) || !nw.Honest(i) {
			continue
		}
		if boot[i] {
			boots = append(boots, i)
		} else {
			servers = append(servers, i)
		}
	}
	group := func(idx []int) LoadGroup {
		g := LoadGroup{Nodes: len(idx), ByKind: map[string]Spread{}}
		var msgs, in, out, recs, rbytes []float64
		kinds := make([][]float64, numKinds)
		for _, i := range idx {
			d := to.t[i]
			if i < len(from.t) {
				d = d.sub(from.t[i])
			}
			msgs = append(msgs, float64(d.total())/sec)
			in = append(in, float64(d.recvd)/sec)
			out = append(out, float64(d.sent)/sec)
			for k, v := range d.msgs {
				kinds[k] = append(kinds[k], float64(v)/sec)
			}
			st := nw.Node(i).DHT().Store()
			recs = append(recs, float64(st.Len()))
			rbytes = append(rbytes, float64(st.Bytes()))
		}
		g.MessagesPerSecond, g.BytesInPerSecond, g.BytesOutPerSecond = spread(msgs), spread(in), spread(out)
		g.Records, g.RecordBytes = spread(recs), spread(rbytes)
		for k, v := range kinds {
			if s := spread(v); s.Max > 0 {
				g.ByKind[kind(k).String()] = s
			}
		}
		return g
	}
	l.Servers = group(servers)
	if len(boots) > 0 {
		b := group(boots)
		l.Bootstrap = &b
	}
	return l
}

// bootstrapNodes returns the nodes that joining nodes dial: the first
// Scenario.Bootstrap nodes.
func (nw *Network) bootstrapNodes() []int {
	var out []int
	for i := range min(nw.sc.Bootstrap, nw.Len()) {
		out = append(out, i)
	}
	return out
}

// writeText writes the load for people.
func (l Load) writeText(w io.Writer) {
	if l.SimSeconds <= 0 {
		return
	}
	fmt.Fprintf(w, "  load       per DHT server over %.0f s simulated (%.0f s wall), mean/p50/p99/max; peak RSS %.2f GiB\n",
		l.SimSeconds, l.WallSeconds, l.PeakRSSBytes/(1<<30))
	fmt.Fprintf(w, "    per second   %.3g announces, %.3g finds, %.3g joins, %.3g leaves\n",
		l.AnnouncesPerSecond, l.FindsPerSecond, l.JoinsPerSecond, l.LeavesPerSecond)
	if l.Shared {
		fmt.Fprintf(w, "    shared       every store of this run on one network: the servers' figures are their sum (run without --baseline for one store's)\n")
	}
	g := func(name string, g LoadGroup) {
		fmt.Fprintf(w, "    %-12s %d nodes: %s msgs/s, %s B/s in, %s B/s out; %s records, %s B held\n", name, g.Nodes,
			g.MessagesPerSecond.text(), g.BytesInPerSecond.text(), g.BytesOutPerSecond.text(), g.Records.text(), g.RecordBytes.text())
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(g.ByKind)) {
			s := g.ByKind[k]
			parts = append(parts, fmt.Sprintf("%s %.3g/%.3g/%.3g/%.3g", k, s.Mean, s.P50, s.P99, s.Max))
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "      by kind msgs/s: %s\n", strings.Join(parts, ", "))
		}
	}
	g("servers", l.Servers)
	if l.Bootstrap != nil {
		g("bootstrap", *l.Bootstrap)
	}
}

func (s Spread) text() string {
	return fmt.Sprintf("%.3g/%.3g/%.3g/%.3g", s.Mean, s.P50, s.P99, s.Max)
}
