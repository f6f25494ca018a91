package loopback

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// Measure is one row of the table: a cellnode sample and the etcd sample
// it is compared with.
type Measure struct {
	Key  string // metric prefix: lowercase letters, digits and '_'
	What string // one line for the table, e.g. "warm find (API / Go client)"
	Cell Sample
	Etcd Sample
}

// Count is a figure that is not a latency, e.g. lost withdrawals.
type Count struct {
	Key   string  // metric unit: lowercase letters, digits and '_'
	What  string  // one line for the table
	Value float64 // the figure
	Of    float64 // out of how many; 0 when it is not a fraction
}

// Metric is one value for testing.B.ReportMetric.
type Metric struct {
	Value float64
	Unit  string
}

// Table holds a run's results. The zero value is an empty table.
type Table struct {
	Title    string
	Measures []*Measure
	Counts   []Count
	Notes    []string
}

// Measure returns the row with key, adding it at the end when there is
// none.
func (t *Table) Measure(key, what string) *Measure {
	for _, m := range t.Measures {
		if m.Key == key {
			return m
		}
	}
	m := &Measure{Key: key, What: what}
	t.Measures = append(t.Measures, m)
	return m
}

// Count adds a figure that is not a latency.
func (t *Table) Count(key, what string, value, of float64) {
	t.Counts = append(t.Counts, Count{Key: key, What: what, Value: value, Of: of})
}

// Note adds a line printed under the table.
func (t *Table) Note(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}

// Metrics returns what the table reports to testing.B: for each measure
// with samples, KEY_cellnode_p50_ms, _p99_ms, KEY_etcd_p50_ms, _p99_ms and
// KEY_ratio_p50, _p99 (only where both sides have samples), and each count
// under its key. Failed attempts are reported as KEY_cellnode_failed and
// KEY_etcd_failed when there are any.
func (t *Table) Metrics() []Metric {
	var out []Metric
	side := func(key, name string, s *Sample) {
		if s.Len() > 0 {
			out = append(out,
				Metric{ms(s.Percentile(50)), key + "_" + name + "_p50_ms"},
				Metric{ms(s.Percentile(99)), key + "_" + name + "_p99_ms"})
		}
		if s.Failed() > 0 {
			out = append(out, Metric{float64(s.Failed()), key + "_" + name + "_failed"})
		}
	}
	for _, m := range t.Measures {
		side(m.Key, "cellnode", &m.Cell)
		side(m.Key, "etcd", &m.Etcd)
		if m.Cell.Len() > 0 && m.Etcd.Len() > 0 {
			out = append(out,
				Metric{Ratio(m.Cell.Percentile(50), m.Etcd.Percentile(50)), m.Key + "_ratio_p50"},
				Metric{Ratio(m.Cell.Percentile(99), m.Etcd.Percentile(99)), m.Key + "_ratio_p99"})
		}
	}
	for _, c := range t.Counts {
		out = append(out, Metric{c.Value, c.Key})
	}
	return out
}

// Write prints the table: one row per measure (n, p50 and p99 of each
// side in ms, the ratios), then the counts and the notes.
func (t *Table) Write(w io.Writer) error {
	var b strings.Builder
	if t.Title != "" {
		fmt.Fprintf(&b, "%s\n", t.Title)
	}
	if len(t.Measures) > 0 {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "measure\tn\tcellnode p50\tp99\tn\tetcd p50\tp99\tratio p50\tp99\t")
		for _, m := range t.Measures {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m.What,
				count(&m.Cell), msCell(&m.Cell, 50), msCell(&m.Cell, 99),
				count(&m.Etcd), msCell(&m.Etcd, 50), msCell(&m.Etcd, 99),
				ratioCell(&m.Cell, &m.Etcd, 50), ratioCell(&m.Cell, &m.Etcd, 99))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, c := range t.Counts {
		if c.Of > 0 {
			fmt.Fprintf(&b, "%s: %g of %g\n", c.What, c.Value, c.Of)
		} else {
			fmt.Fprintf(&b, "%s: %g\n", c.What, c.Value)
		}
	}
	for _, n := range t.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// count is a sample's size for the table, with failures: "10", "9+1 failed".
func count(s *Sample) string {
	switch {
	case s.Len() == 0 && s.Failed() == 0:
		return "-"
	case s.Failed() == 0:
		return fmt.Sprint(s.Len())
	}
	return fmt.Sprintf("%d+%d failed", s.Len(), s.Failed())
}

func msCell(s *Sample, p float64) string {
	if s.Len() == 0 {
		return "-"
	}
	return fmtMS(ms(s.Percentile(p)))
}

func ratioCell(a, b *Sample, p float64) string {
	if a.Len() == 0 || b.Len() == 0 {
		return "-"
	}
	r := Ratio(a.Percentile(p), b.Percentile(p))
	if math.IsNaN(r) {
		return "-"
	}
	return fmt.Sprintf("%.1fx", r)
}

// fmtMS prints milliseconds with three significant digits or more.
func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}
