// Package footprint measures what a process holds, for tests and
// benchmarks that assert bounds under attack: live heap after a garbage
// collection, open file descriptors, and the peak of both while something
// runs. Its functions are safe for concurrent use.
package footprint

import (
	"os"
	"runtime"
	"sync"
	"time"
)

// MB is a mebibyte, for reading figures.
const MB = 1 << 20

// Heap returns the bytes of live heap objects after a full collection.
func Heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// HeapNoGC returns the bytes of heap in use now, garbage included: what a
// sampler sees without forcing a collection.
func HeapNoGC() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// FDs returns the number of open file descriptors of this process, from
// /proc/self/fd, or -1 where there is no /proc.
func FDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // ReadDir's own descriptor
}

// Peak samples the heap in use and the descriptors every interval from
// Start until Stop, and keeps the highest of each.
type Peak struct {
	mu      sync.Mutex
	heap    uint64
	fds     int
	stop    chan struct{}
	stopped chan struct{}
}

// Start begins sampling every interval (0 means 10 ms).
func Start(interval time.Duration) *Peak {
	if interval <= 0 {
		interval = 10 * time.Millisecond
	}
	p := &Peak{stop: make(chan struct{}), stopped: make(chan struct{})}
	p.sample()
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.sample()
			}
		}
	}()
	return p
}

func (p *Peak) sample() {
	h, f := HeapNoGC(), FDs()
	p.mu.Lock()
	p.heap, p.fds = max(p.heap, h), max(p.fds, f)
	p.mu.Unlock()
}

// Stop ends sampling and returns the peaks: heap in use (garbage included)
// and descriptors. It is safe to call more than once.
func (p *Peak) Stop() (heap uint64, fds int) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.stopped
	p.sample()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heap, p.fds
}
