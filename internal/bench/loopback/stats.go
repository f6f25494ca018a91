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
