package sim

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Latency holds percentiles of operation times (nearest rank), in
// milliseconds and in round trips of the simulated link. The RTT figures
// are zero when the scenario has no latency.
type Latency struct {
	P50MS  float64 `json:"p50_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	P50RTT float64 `json:"p50_rtt"`
	P95RTT float64 `json:"p95_rtt"`
	P99RTT float64 `json:"p99_rtt"`
}

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
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	l := Latency{P50MS: ms(at(.50)), P95MS: ms(at(.95)), P99MS: ms(at(.99))}
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

// Report is what Measure found. Messages are the requests sent on the
// kad-dht and cell protocols by every node of the network during a phase,
// divided by the operations of the phase; the *Messages maps give the
// phase's totals by kind ("kad_find_node", "kad_put_value", "cell", ...).
// Bytes count both directions of the streams that carried them.
type Report struct {
	Scenario Scenario `json:"scenario"` // defaults applied
	Design   Design   `json:"design"`

	SetupSeconds      float64 `json:"setup_seconds"`
	HeapBytesPerNode  float64 `json:"heap_bytes_per_node"` // live heap after setup, per node
	GoroutinesPerNode float64 `json:"goroutines_per_node"` // after setup, per node

	Announces           int               `json:"announces"`
	Announce            Latency           `json:"announce_latency"`
	MessagesPerAnnounce float64           `json:"messages_per_announce"`
	BytesPerAnnounce    float64           `json:"bytes_per_announce"`
	AnnounceMessages    map[string]uint64 `json:"announce_messages"`

	Finds           int               `json:"finds"`
	Misses          int               `json:"misses"`  // finds that did not return every instance
	Errors          int               `json:"errors"`  // finds that failed outright (counted in Misses too)
	Success         float64           `json:"success"` // (Finds-Misses)/Finds, 0 to 1
	FirstError      string            `json:"first_error,omitempty"`
	Find            Latency           `json:"find_latency"`
	MessagesPerFind float64           `json:"messages_per_find"`
	BytesPerFind    float64           `json:"bytes_per_find"`
	FindMessages    map[string]uint64 `json:"find_messages"`
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
	fmt.Fprintf(&b, "%s: %d nodes, k=%d, latency %v (RTT %v), %d cells x %d instances, seed %d\n",
		r.Design, sc.Nodes, sc.BucketSize, sc.Latency, sc.RTT(), sc.Cells, sc.InstancesPerCell, sc.Seed)
	fmt.Fprintf(&b, "  setup     %.1f s, %.0f KiB heap and %.0f goroutines per node\n",
		r.SetupSeconds, r.HeapBytesPerNode/1024, r.GoroutinesPerNode)
	fmt.Fprintf(&b, "  announce  %d: %s; %.1f msgs, %.0f bytes each %s\n",
		r.Announces, r.Announce.text(sc.Latency > 0), r.MessagesPerAnnounce, r.BytesPerAnnounce, kinds(r.AnnounceMessages))
	fmt.Fprintf(&b, "  find      %d: %s; %.1f msgs, %.0f bytes each %s\n",
		r.Finds, r.Find.text(sc.Latency > 0), r.MessagesPerFind, r.BytesPerFind, kinds(r.FindMessages))
	fmt.Fprintf(&b, "  success   %.1f%% (%d misses, %d errors)\n", 100*r.Success, r.Misses, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "  first error: %s\n", r.FirstError)
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
