package loopback

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, which
// Linux reports as 100 per second on every architecture).
const clockTick = 10 * time.Millisecond

// CPUTime is the CPU a process has used, user and system, every thread
// included (exited threads too), from /proc/<pid>/stat; its resolution is
// clockTick.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("loopback: cpu time of %d: %w", pid, err)
	}
	return ParseStatCPU(b)
}

// ParseStatCPU returns utime+stime of a /proc/<pid>/stat line. The
// command's name (field 2, in parentheses) may hold spaces and
// parentheses, so the fields are counted from the last ')'.
func ParseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("loopback: /proc stat line without a command name: %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("loopback: /proc stat line with %d fields after the name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("loopback: /proc stat cpu time %q: not a count of ticks", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// RSS is the resident set of a process in bytes (VmRSS of
// /proc/<pid>/status).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("loopback: rss of %d: %w", pid, err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n << 10, nil
				}
			}
			return 0, fmt.Errorf("loopback: rss of %d: bad VmRSS line %q", pid, l)
		}
	}
	return 0, fmt.Errorf("loopback: rss of %d: no VmRSS line", pid)
}

// CPUWindow is the CPU a process used between two readings.
type CPUWindow struct {
	From, To       time.Time
	CPUFrom, CPUTo time.Duration
}

// Rate is the window's CPU per second of wall time, in milliseconds per
// second (1000 is one core kept busy); 0 for an empty window.
func (w CPUWindow) Rate() float64 {
	wall := w.To.Sub(w.From)
	if wall <= 0 {
		return 0
	}
	return float64(w.CPUTo-w.CPUFrom) / float64(time.Millisecond) / wall.Seconds()
}

// Rates is a set of per-process rates (ms of CPU per second) with their
// summaries.
type Rates []float64

// Mean is the rates' mean; 0 when there are none.
func (r Rates) Mean() float64 {
	if len(r) == 0 {
		return 0
	}
	var s float64
	for _, v := range r {
		s += v
	}
	return s / float64(len(r))
}

// Quantile is the nearest-rank p-th percentile (0 < p ≤ 100) of the rates;
// 0 when there are none.
func (r Rates) Quantile(p float64) float64 {
	if len(r) == 0 {
		return 0
	}
	s := slices.Clone([]float64(r))
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(len(s)-1, i))]
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// CPUConfig sizes BenchmarkSidecarCPU. The zero value of each field means
// its default.
type CPUConfig struct {
	Sidecars int           // sidecars started at once; 0 means 16
	Start    time.Duration // the start window, from each process's start; 0 means 10 s
	Settle   time.Duration // from the end of the start window to the steady one; 0 means 5 s
	Steady   time.Duration // the steady window; 0 means 30 s
	// Profile, when not "", is a directory where every sidecar writes CPU
	// profiles (CELLNODE_CPUPROFILE, split at the end of the start window):
	// sidecar-NN.pprof.start and sidecar-NN.pprof.
	Profile string
}

// CPUEnv names the environment variables CPUConfigFromEnv reads, by
// CPUConfig field.
var CPUEnv = map[string]string{
	"Sidecars": "LOOPBACK_CPU_SIDECARS",
	"Start":    "LOOPBACK_CPU_START",
	"Settle":   "LOOPBACK_CPU_SETTLE",
	"Steady":   "LOOPBACK_CPU_STEADY",
	"Profile":  "LOOPBACK_CPU_PROFILE",
}

// CPUConfigFromEnv reads a CPUConfig from the variables named in CPUEnv
// through getenv, then applies the defaults. Unset or empty variables take
// the default; a count that is not a positive integer or a window that is
// not a positive duration is an error naming the variable.
func CPUConfigFromEnv(getenv func(string) string) (CPUConfig, error) {
	var c CPUConfig
	if v := getenv(CPUEnv["Sidecars"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return CPUConfig{}, fmt.Errorf("loopback: %s=%q: want a positive integer", CPUEnv["Sidecars"], v)
		}
		c.Sidecars = n
	}
	for _, f := range []struct {
		field string
		dst   *time.Duration
	}{{"Start", &c.Start}, {"Settle", &c.Settle}, {"Steady", &c.Steady}} {
		v := getenv(CPUEnv[f.field])
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return CPUConfig{}, fmt.Errorf("loopback: %s=%q: want a positive duration such as 10s", CPUEnv[f.field], v)
		}
		*f.dst = d
	}
	c.Profile = getenv(CPUEnv["Profile"])
	return c.withDefaults(), nil
}

func (c CPUConfig) withDefaults() CPUConfig {
	if c.Sidecars <= 0 {
		c.Sidecars = 16
	}
	if c.Start <= 0 {
		c.Start = 10 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 5 * time.Second
	}
	if c.Steady <= 0 {
		c.Steady = 30 * time.Second
	}
	return c
}
