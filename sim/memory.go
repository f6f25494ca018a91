package sim

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Memory is what the nodes of a network cost, per node: the growth of the
// process's live heap, resident memory and goroutines while the network
// was built, divided by its nodes.
type Memory struct {
	HeapBytes  float64 `json:"heap_bytes_per_node"`
	RSSBytes   float64 `json:"rss_bytes_per_node"` // 0 where /proc/self/status is not there
	Goroutines float64 `json:"goroutines_per_node"`
}

// BytesPerNode returns RSSBytes, or HeapBytes where RSS is not known.
func (m Memory) BytesPerNode() float64 {
	if m.RSSBytes > 0 {
		return m.RSSBytes
	}
	return m.HeapBytes
}

// usage is one reading of the process's memory.
type usage struct {
	heap, rss  uint64
	goroutines int
}

// memUse collects garbage, returns freed memory to the system and reads
// the live heap, the resident set and the goroutines.
func memUse() usage {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{heap: ms.HeapAlloc, rss: rss(), goroutines: runtime.NumGoroutine()}
}

// perNode returns the growth from u0 to u over n nodes.
func (u usage) perNode(u0 usage, n int) Memory {
	d := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	m := Memory{HeapBytes: d(u.heap, u0.heap), Goroutines: float64(u.goroutines-u0.goroutines) / float64(n)}
	if u.rss > 0 && u0.rss > 0 {
		m.RSSBytes = d(u.rss, u0.rss)
	}
	return m
}

// rss returns VmRSS from /proc/self/status in bytes, or 0.
func rss() uint64 { return procStatus("VmRSS:") }

// peakRSS returns VmHWM, the peak resident set, in bytes, or 0.
func peakRSS() uint64 { return procStatus("VmHWM:") }

// procStatus returns the field of /proc/self/status, in kB there, in bytes.
func procStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
