package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Latency holds percentiles of operation times (nearest rank), in
// milliseconds and in round trips (see Network.RTT). The RTT figures are
// zero when links have no latency; all are zero with no samples.
type Latency struct {
	N      int     `json:"n"` // samples
	P50MS  float64 `json:"p50_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	P50RTT float64 `json:"p50_rtt"`
	P95RTT float64 `json:"p95_rtt"`
	P99RTT float64 `json:"p99_rtt"`
}

func ms(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }

// latency computes the percentiles of d, a list it sorts.
func latency(d []time.Duration, rtt time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	l := Latency{N: len(d), P50MS: ms(at(.50)), P95MS: ms(at(.95)), P99MS: ms(at(.99))}
	if rtt > 0 {
		r := ms(rtt)
		l.P50RTT, l.P95RTT, l.P99RTT = l.P50MS/r, l.P95MS/r, l.P99MS/r
	}
	return l
}

// perOp returns the messages and the bytes (sent and received) of t per
// operation.
func perOp(t tally, ops int) (msgs, bytes float64) {
	if ops == 0 {
		return 0, 0
	}
	return float64(t.total()) / float64(ops), float64(t.sent+t.recvd) / float64(ops)
}

// Report is what Measure found for one design.
//
// Messages are the requests sent on the kad-dht and cell protocols by the
// node doing the operation (the finder, the publisher), divided by the
// operations; the *Messages maps give the totals by kind
// ("kad_find_node", "kad_put_value", "cell", ...). Bytes count both
// directions of the streams that carried them. Times are wall-clock times
// of the operation over links with the scenario's latency.
//
// Its JSON form (MarshalJSON) groups the figures by subject: "find",
// "announce", "staleness", "memory", ...; see docs/sim.md.
type Report struct {
	Scenario  Scenario // defaults applied
	Design    Design
	Nodes     int     // at setup
	LiveNodes int     // live honest nodes at the end
	RTTMS     float64 // the RTT unit of the figures, in ms (Network.RTT)
	// Schedule is a hash of every choice the run made from the seed:
	// instance hosts, finders and their cells, nodes that left and joined,
	// sides of the partition, nodes killed. The same seed and scenario give
	// the same Schedule.
	Schedule string

	SetupSeconds      float64
	Memory            Memory  // after setup
	MemoryIdle        Memory  // with full, connected routing tables, before any stream was opened (SetupTables)
	MemoryEnd         Memory  // at the end of the run, over the live nodes
	HeapBytesPerNode  float64 // Memory.HeapBytes
	GoroutinesPerNode float64 // Memory.Goroutines

	Announces              int     // announces and republishes
	Announce               Latency // until the publish returned (first announces only, one at a time)
	AnnounceFirst          Latency // until the first storer took the record (set-store only; first announces)
	MessagesPerAnnounce    float64 // per announce or republish
	BytesPerAnnounce       float64
	BytesPerInstanceMinute float64 // BytesPerAnnounce × republishes per minute
	AnnounceMessages       map[string]uint64
	// The same for the republishes alone (every announce but the first
	// of each instance).
	Republishes              int
	MessagesPerRepublishOnly float64
	BytesPerRepublishOnly    float64
	RepublishMessages        map[string]uint64

	Finds           int
	Misses          int     // finds that did not return every live reachable instance
	Errors          int     // finds that failed outright (counted in Misses too)
	Success         float64 // (Finds-Misses)/Finds, 0 to 1
	FirstError      string
	FirstMiss       string  // the first find that returned without error but missed a live instance, and its dht.FindStats
	Find            Latency // until the find returned: the full set
	FindFirst       Latency // until the first valid record of a live instance arrived
	FindRepeat      Latency // the same find again at once from the same node
	MessagesPerFind float64
	BytesPerFind    float64
	FindMessages    map[string]uint64
	// InstancesWanted and InstancesFound sum, over the finds, the live
	// reachable instances each should have returned and those it did.
	InstancesWanted, InstancesFound int
	// ShardsMax is the most shards a find asked (dht.FindStats.Shards);
	// ShardsUnanswered sums the shards no storer answered over the finds.
	ShardsMax, ShardsUnanswered int
	StaleReturns                int // instances of dead hosts returned by the finds
	// Lapsed sums, over the finds, the live instances left out of
	// InstancesWanted because the simulator let their record expire
	// before it republished them (see run.expected).
	Lapsed        int
	EarlyStops    int // set-store finds that stopped before their lookup ended (dht.FindStats.Early)
	RepeatsCached int // set-store repeated finds answered by the remembered storers, without a lookup
	// Rejected counts, over every node and the whole run, the records
	// storers refused ("rejected_future", ...), the records finders
	// dropped ("find_rejected_expired", ...) and the requests refused by
	// rate limits ("rate_limited").
	Rejected map[string]uint64

	Phases    map[string]PhaseStats // "before", "during", "after" a partition
	Churn     ChurnStats
	Staleness Staleness
	// Load is what each DHT server received over the find phase (every
	// design's requests together, when a baseline runs beside).
	Load Load

	// Baseline is the report of ValueRecords measured beside this design
	// (Scenario.Baseline), and VsBaseline this report's figures over the
	// baseline's: "find_p50", "messages_per_find", ... (see ratios).
	Baseline   *Report
	VsBaseline map[string]float64

	// Hot is the hot-name phase's report (Scenario.Hot), which replaces
	// the find and staleness phases.
	Hot *HotReport
}

// PhaseStats is the success of the finds of one part of the find phase.
type PhaseStats struct {
	Finds   int     `json:"finds"`
	Misses  int     `json:"misses"`
	Success float64 `json:"success_rate"`
}

// ChurnStats counts the churn that happened.
type ChurnStats struct {
	Left       int `json:"left"`
	Joined     int `json:"joined"`
	JoinErrors int `json:"join_errors,omitempty"`
}

// Staleness is what the staleness phase saw: how long instances whose host
// was killed were still returned by finds.
type Staleness struct {
	Killed  int `json:"killed"`
	Finds   int `json:"finds"`
	Returns int `json:"returns"` // finds that returned a dead instance
	// MaxMS is the longest time, on the simulated clock, from a kill to a
	// find that still returned the dead instance.
	MaxMS float64 `json:"max_ms"`
	// MaxPastLifeMS is the longest time from a dead instance's record's
	// end of life (issued + lifetime, on the network's clock) to a find
	// that still returned it; the protocol allows record.MaxSkew plus the
	// clock difference of publisher and finder.
	MaxPastLifeMS float64 `json:"max_past_life_ms"`
	// BoundMS is lifetime + record.MaxSkew + twice the scenario's skew: no
	// dead instance may be returned longer than that after its kill.
	BoundMS float64 `json:"bound_ms"`
	// Violations counts returns later than the protocol allows for that
	// publisher and finder (issued + lifetime + MaxSkew + publisher skew −
	// finder skew, + one step).
	Violations int `json:"violations"`
	// StepMS is the resolution: how far the clock moved between finds
	// near the end of life.
	StepMS float64 `json:"step_ms"`
}

// reportJSON is the JSON layout of a Report.
type reportJSON struct {
	Scenario     Scenario              `json:"scenario"`
	Design       string                `json:"design"`
	Nodes        int                   `json:"nodes"`
	LiveNodes    int                   `json:"live_nodes"`
	RTTMS        float64               `json:"rtt_ms"`
	Schedule     string                `json:"schedule"`
	SetupSeconds float64               `json:"setup_seconds"`
	Memory       memoryJSON            `json:"memory"`
	Announce     announceJSON          `json:"announce"`
	Find         findJSON              `json:"find"`
	Phases       map[string]PhaseStats `json:"partition,omitempty"`
	Churn        ChurnStats            `json:"churn"`
	Rejected     map[string]uint64     `json:"rejected,omitempty"`
	Staleness    Staleness             `json:"staleness"`
	Load         Load                  `json:"load"`
	Baseline     *Report               `json:"baseline,omitempty"`
	VsBaseline   map[string]float64    `json:"vs_baseline,omitempty"`
	Hot          *HotReport            `json:"hot,omitempty"`
}

type memoryJSON struct {
	BytesPerNode float64 `json:"bytes_per_node"`
	Memory
	End Memory `json:"end_of_run"`
}

type announceJSON struct {
	Count int `json:"count"`
	Latency
	FirstStore           Latency           `json:"first_store"`
	MessagesPerRepublish float64           `json:"messages_per_republish"`
	BytesPerRepublish    float64           `json:"bytes_per_republish"`
	BytesPerInstanceMin  float64           `json:"bytes_per_instance_per_minute"`
	Messages             map[string]uint64 `json:"messages"`
	Republishes          republishJSON     `json:"republishes"`
}

// republishJSON is the republishes alone, without the first announces.
type republishJSON struct {
	Count           int               `json:"count"`
	MessagesPerEach float64           `json:"messages_each"`
	BytesPerEach    float64           `json:"bytes_each"`
	Messages        map[string]uint64 `json:"messages"`
}

type findJSON struct {
	Count int `json:"count"`
	Latency
	FirstP50MS       float64           `json:"first_p50_ms"`
	FirstP95MS       float64           `json:"first_p95_ms"`
	FirstP50RTT      float64           `json:"first_p50_rtt"`
	FirstP95RTT      float64           `json:"first_p95_rtt"`
	First            Latency           `json:"first"`
	Repeat           Latency           `json:"repeat"`
	SuccessRate      float64           `json:"success_rate"`
	Misses           int               `json:"misses"`
	Errors           int               `json:"errors"`
	FirstError       string            `json:"first_error,omitempty"`
	FirstMiss        string            `json:"first_miss,omitempty"`
	FoundFraction    float64           `json:"found_fraction"`
	ShardsMax        int               `json:"shards_max"`
	ShardsUnanswered int               `json:"shards_unanswered"`
	StaleReturns     int               `json:"stale_returns"`
	Lapsed           int               `json:"lapsed"`
	EarlyStops       int               `json:"early_stops"`
	RepeatsCached    int               `json:"repeats_cached"`
	MessagesPerFind  float64           `json:"messages_per_find"`
	BytesPerFind     float64           `json:"bytes_per_find"`
	Messages         map[string]uint64 `json:"messages"`
}

// MarshalJSON writes the report grouped by subject.
func (r *Report) MarshalJSON() ([]byte, error) {
	return json.Marshal(reportJSON{
		Scenario: r.Scenario, Design: r.Design.String(), Nodes: r.Nodes, LiveNodes: r.LiveNodes,
		RTTMS: r.RTTMS, Schedule: r.Schedule, SetupSeconds: r.SetupSeconds,
		Memory: memoryJSON{BytesPerNode: r.Memory.BytesPerNode(), Memory: r.Memory, End: r.MemoryEnd},
		Announce: announceJSON{Count: r.Announces, Latency: r.Announce, FirstStore: r.AnnounceFirst,
			MessagesPerRepublish: r.MessagesPerAnnounce, BytesPerRepublish: r.BytesPerAnnounce,
			BytesPerInstanceMin: r.BytesPerInstanceMinute, Messages: r.AnnounceMessages,
			Republishes: republishJSON{Count: r.Republishes, MessagesPerEach: r.MessagesPerRepublishOnly,
				BytesPerEach: r.BytesPerRepublishOnly, Messages: r.RepublishMessages}},
		Find: findJSON{Count: r.Finds, Latency: r.Find,
			FirstP50MS: r.FindFirst.P50MS, FirstP95MS: r.FindFirst.P95MS,
			FirstP50RTT: r.FindFirst.P50RTT, FirstP95RTT: r.FindFirst.P95RTT,
			First: r.FindFirst, Repeat: r.FindRepeat,
			SuccessRate: r.Success, Misses: r.Misses, Errors: r.Errors, FirstError: r.FirstError, FirstMiss: r.FirstMiss,
			FoundFraction: r.FoundFraction(), ShardsMax: r.ShardsMax, ShardsUnanswered: r.ShardsUnanswered,
			StaleReturns: r.StaleReturns, Lapsed: r.Lapsed, EarlyStops: r.EarlyStops, RepeatsCached: r.RepeatsCached, MessagesPerFind: r.MessagesPerFind, BytesPerFind: r.BytesPerFind,
			Messages: r.FindMessages},
		Phases: r.Phases, Churn: r.Churn, Rejected: r.Rejected, Staleness: r.Staleness, Load: r.Load,
		Baseline: r.Baseline, VsBaseline: r.VsBaseline, Hot: r.Hot,
	})
}

// FoundFraction is InstancesFound over InstancesWanted (1 when no find
// wanted any).
func (r *Report) FoundFraction() float64 {
	if r.InstancesWanted == 0 {
		return 1
	}
	return float64(r.InstancesFound) / float64(r.InstancesWanted)
}

// String returns the report as WriteText writes it.
func (r *Report) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// WriteText writes the report in a form for people.
func (r *Report) WriteText(w io.Writer) error {
	sc := r.Scenario
	var b strings.Builder
	if sc.Name != "" {
		fmt.Fprintf(&b, "%s ", sc.Name)
	}
	lat := fmt.Sprintf("latency %v", sc.Latency)
	if sc.Regions != nil {
		lat = fmt.Sprintf("%d regions", len(sc.Regions.Names))
	}
	rttOn := r.RTTMS > 0
	fmt.Fprintf(&b, "%s: %d nodes, k=%d, %s (RTT unit %.0f ms), %d cells x %d instances, seed %d (schedule %s)\n",
		r.Design, r.Nodes, sc.BucketSize, lat, r.RTTMS, sc.Cells, sc.InstancesPerCell, sc.Seed, r.Schedule)
	fmt.Fprintf(&b, "  setup      %.1f s; per node %.2f MiB RSS, %.2f MiB heap, %.0f goroutines\n",
		r.SetupSeconds, r.Memory.RSSBytes/(1<<20), r.Memory.HeapBytes/(1<<20), r.Memory.Goroutines)
	fmt.Fprintf(&b, "    end of run   %.2f MiB RSS, %.0f goroutines per live node\n", r.MemoryEnd.RSSBytes/(1<<20), r.MemoryEnd.Goroutines)
	fmt.Fprintf(&b, "  announce   %d timed: %s\n", r.Announce.N, r.Announce.text(rttOn))
	fmt.Fprintf(&b, "    messages     %d announces and republishes: %.1f msgs, %.0f bytes each %s\n",
		r.Announces, r.MessagesPerAnnounce, r.BytesPerAnnounce, kinds(r.AnnounceMessages))
	if r.Republishes > 0 {
		fmt.Fprintf(&b, "    republishes  %d alone: %.1f msgs, %.0f bytes each %s\n",
			r.Republishes, r.MessagesPerRepublishOnly, r.BytesPerRepublishOnly, kinds(r.RepublishMessages))
	}
	if r.AnnounceFirst.N > 0 {
		fmt.Fprintf(&b, "    first store  %s\n", r.AnnounceFirst.text(rttOn))
	}
	fmt.Fprintf(&b, "    republishing %.0f bytes per instance per minute (every %v)\n", r.BytesPerInstanceMinute, sc.Republish)
	if r.Hot == nil {
		fmt.Fprintf(&b, "  find       %d: %s; %.1f msgs, %.0f bytes each %s\n",
			r.Finds, r.Find.text(rttOn), r.MessagesPerFind, r.BytesPerFind, kinds(r.FindMessages))
	}
	if r.ShardsMax > 1 {
		fmt.Fprintf(&b, "    instances    %d of %d found (%.4f); up to %d shards asked, %d shards unanswered\n",
			r.InstancesFound, r.InstancesWanted, r.FoundFraction(), r.ShardsMax, r.ShardsUnanswered)
	}
	if r.FindFirst.N > 0 {
		fmt.Fprintf(&b, "    first        %s\n", r.FindFirst.text(rttOn))
	}
	if r.FindRepeat.N > 0 {
		fmt.Fprintf(&b, "    repeated     %s", r.FindRepeat.text(rttOn))
		if r.Design == SetStore {
			fmt.Fprintf(&b, "; %d of %d without a lookup", r.RepeatsCached, r.FindRepeat.N)
		}
		fmt.Fprintln(&b)
	}
	fmt.Fprintf(&b, "  success    %.1f%% (%d misses, %d errors, %d dead instances returned); %d finds stopped early\n",
		100*r.Success, r.Misses, r.Errors, r.StaleReturns, r.EarlyStops)
	if r.FirstMiss != "" {
		fmt.Fprintf(&b, "    first miss: %s\n", r.FirstMiss)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "    first error: %s\n", r.FirstError)
	}
	for _, k := range []string{"before", "during", "after"} {
		if p, ok := r.Phases[k]; ok {
			fmt.Fprintf(&b, "    %-6s partition: %.1f%% of %d finds\n", k, 100*p.Success, p.Finds)
		}
	}
	if c := r.Churn; c != (ChurnStats{}) {
		fmt.Fprintf(&b, "  churn      %d left, %d joined (%d join errors); %d live honest nodes at the end\n",
			c.Left, c.Joined, c.JoinErrors, r.LiveNodes)
	}
	if len(r.Rejected) > 0 {
		fmt.Fprintf(&b, "  rejected   %s\n", kinds(r.Rejected))
	}
	if s := r.Staleness; s.Killed > 0 {
		fmt.Fprintf(&b, "  staleness  %d killed: returned up to %.1f s after the kill (%.1f s past its life; bound %.1f s), %d violations in %d finds\n",
			s.Killed, s.MaxMS/1000, s.MaxPastLifeMS/1000, s.BoundMS/1000, s.Violations, s.Finds)
	}
	if r.Hot != nil {
		r.Hot.writeText(&b)
	}
	r.Load.writeText(&b)
	if r.Baseline != nil {
		fmt.Fprintf(&b, "  vs %s:", r.Baseline.Design)
		for _, k := range slices.Sorted(maps.Keys(r.VsBaseline)) {
			fmt.Fprintf(&b, " %s %.2fx", k, r.VsBaseline[k])
		}
		b.WriteString("\n")
		var bb strings.Builder
		_ = r.Baseline.WriteText(&bb)
		b.WriteString("baseline " + bb.String())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (l Latency) text(rtt bool) string {
	s := fmt.Sprintf("p50 %.1f ms, p95 %.1f ms, p99 %.1f ms", l.P50MS, l.P95MS, l.P99MS)
	if rtt {
		s += fmt.Sprintf(" (%.2f / %.2f / %.2f RTT)", l.P50RTT, l.P95RTT, l.P99RTT)
	}
	return s
}

func kinds(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// String returns the comparison as WriteText writes it.
func (c *Comparison) String() string {
	var b strings.Builder
	_ = c.WriteText(&b)
	return b.String()
}

// WriteText writes both reports, design 1 first.
func (c *Comparison) WriteText(w io.Writer) error {
	for _, r := range []*Report{c.SetStore, c.ValueRecords} {
		if r == nil {
			continue
		}
		if err := r.WriteText(w); err != nil {
			return err
		}
	}
	return nil
}

// LatencyOf summarizes durations d; rtt, when not 0, is the unit of the
// RTT figures.
func LatencyOf(d []time.Duration, rtt time.Duration) Latency { return latency(d, rtt) }
