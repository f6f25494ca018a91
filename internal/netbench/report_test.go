package netbench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/delaynet"
)

// report collects the samples of each operation.
type report struct {
	rtt   time.Duration
	net   *delaynet.Network
	cur   string               // the phase under way
	at    delaynet.Stats       // the switch's counters when it began
	cpu   func() time.Duration // CPU time the cellnode processes have used so far; nil: not reported
	cpuAt time.Duration        // its value when the phase began
	began time.Time
	lines []string // the switch's lateness in each phase
	order []string
	ops   map[string]*opStats
}

type opStats struct {
	took          []time.Duration
	stages        [][]stage
	found, entire int
	counted       int
}

func (r *report) op(name string) *opStats {
	if r.ops == nil {
		r.ops = map[string]*opStats{}
	}
	o := r.ops[name]
	if o == nil {
		o = &opStats{}
		r.ops[name] = o
		r.order = append(r.order, name)
	}
	return o
}

// phase ends the phase under way, noting how late the switch sent frames
// in it, and begins the named one ("" for none).
func (r *report) phase(name string) {
	now := r.net.Stats()
	var cpu time.Duration
	if r.cpu != nil {
		cpu = r.cpu()
	}
	if r.cur != "" {
		line := fmt.Sprintf("switch during %-28s %6d frames, %4d sent over 1 ms late, %4d over 5 ms",
			r.cur+":", now.Frames-r.at.Frames, now.Late-r.at.Late, now.Late5-r.at.Late5)
		if r.cpu != nil {
			wall := time.Since(r.began)
			line += fmt.Sprintf("; cellnode CPU %.1f s in %.1f s (%.2f cores)", (cpu - r.cpuAt).Seconds(), wall.Seconds(), float64(cpu-r.cpuAt)/float64(wall))
		}
		r.lines = append(r.lines, line)
	}
	r.cur, r.at, r.cpuAt, r.began = name, now, cpu, time.Now()
}

func (r *report) add(name string, d time.Duration, st []stage) {
	o := r.op(name)
	o.took = append(o.took, d)
	o.stages = append(o.stages, st)
}

// found counts whether a find returned a reachable instance, and all the
// live ones.
func (r *report) found(name string, any, all bool) {
	o := r.op(name)
	o.counted++
	if any {
		o.found++
	}
	if all {
		o.entire++
	}
}

// pct is the nearest-rank percentile p (0 < p <= 1) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max(int(math.Ceil(p*float64(len(s))))-1, 0)]
}

func (r *report) inRTT(d time.Duration) float64 { return float64(d) / float64(r.rtt) }

// print writes the report to stdout (a benchmark's log is cut to a few lines).
func (r *report) print() {
	var b strings.Builder
	fmt.Fprintf(&b, "figures in RTTs of %v (ms in brackets); p50 / p95 / max over n samples\n", r.rtt)
	for _, name := range r.order {
		o := r.ops[name]
		p50, p95, mx := pct(o.took, .5), pct(o.took, .95), pct(o.took, 1)
		fmt.Fprintf(&b, "%-28s n=%-2d %6.1f / %6.1f / %6.1f RTT  [%.0f / %.0f / %.0f ms]", name, len(o.took),
			r.inRTT(p50), r.inRTT(p95), r.inRTT(mx), ms(p50), ms(p95), ms(mx))
		if o.counted > 0 {
			fmt.Fprintf(&b, "  found %d/%d, every live instance %d/%d", o.found, o.counted, o.entire, o.counted)
		}
		b.WriteString("\n")
		var names []stage
		for _, sts := range o.stages {
			if len(sts) > len(names) {
				names = sts
			}
		}
		for i, st := range names {
			var ds []time.Duration
			for _, sts := range o.stages {
				if i < len(sts) && sts[i].ok {
					ds = append(ds, sts[i].d)
				}
			}
			if len(ds) == 0 {
				fmt.Fprintf(&b, "    %-44s (not seen)\n", st.name)
				continue
			}
			if st.count {
				fmt.Fprintf(&b, "    %-44s p50 %d, max %d\n", st.name, pct(ds, .5), pct(ds, 1))
				continue
			}
			fmt.Fprintf(&b, "    %-44s p50 %6.2f RTT, p95 %6.2f  (n=%d)\n", st.name, r.inRTT(pct(ds, .5)), r.inRTT(pct(ds, .95)), len(ds))
		}
	}
	for _, l := range r.lines {
		b.WriteString(l + "\n")
	}
	fmt.Print(b.String())
}

// metrics reports each operation's p50 and p95 in RTTs.
func (r *report) metrics(b *testing.B) {
	for _, name := range r.order {
		o := r.ops[name]
		slug := strings.NewReplacer(" ", "_", ",", "", "%", "pct", "(", "", ")", "").Replace(name)
		b.ReportMetric(r.inRTT(pct(o.took, .5)), slug+"_p50_rtt")
		b.ReportMetric(r.inRTT(pct(o.took, .95)), slug+"_p95_rtt")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
