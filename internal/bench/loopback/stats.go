package loopback

import (
	"math"
	"slices"
	"time"
)

// Sample is the durations measured for one side of one measure, in the
// order they were taken. The zero value is an empty sample.
type Sample struct {
	d      []time.Duration
	failed int // attempts that gave no duration (timeouts, wrong answers)
}

// Add records one measured duration.
func (s *Sample) Add(d time.Duration) { s.d = append(s.d, d) }

// Fail records an attempt that gave no duration; it is counted, not
// averaged in.
func (s *Sample) Fail() { s.failed++ }

// Len is the number of durations recorded.
func (s *Sample) Len() int { return len(s.d) }

// Failed is the number of attempts recorded with Fail.
func (s *Sample) Failed() int { return s.failed }

// Percentile returns the p-th percentile (0 < p <= 100) of the durations by
// nearest rank: the smallest duration that at least p % of the sample do
// not exceed. An empty sample gives 0, and so does a p outside (0, 100].
func (s *Sample) Percentile(p float64) time.Duration {
	if len(s.d) == 0 || !(p > 0 && p <= 100) {
		return 0
	}
	sorted := slices.Clone(s.d)
	slices.Sort(sorted)
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Ratio returns a/b, or NaN when b is zero (nothing to compare with).
func Ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// PairedRatio returns the median of a[i]/b[i] over the pairs both samples
// hold (the first min(len) of each, in the order taken), or NaN when there
// is none or a b[i] is zero. Two commands timed in turn drift together
// with the machine's speed; the ratio of each pair does not, so its
// median says more than the ratio of the two medians.
func PairedRatio(a, b *Sample) float64 {
	n := min(len(a.d), len(b.d))
	if n == 0 {
		return math.NaN()
	}
	r := make([]float64, n)
	for i := range n {
		if b.d[i] == 0 {
			return math.NaN()
		}
		r[i] = float64(a.d[i]) / float64(b.d[i])
	}
	slices.Sort(r)
	if n%2 == 1 {
		return r[n/2]
	}
	return (r[n/2-1] + r[n/2]) / 2
}
