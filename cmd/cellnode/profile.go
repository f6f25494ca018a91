package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"
)

// Hidden switches for profiling a real process (the loopback benchmark's
// sidecar CPU measure uses them; see docs/performance.md, session 6):
//
//   - CELLNODE_CPUPROFILE=PATH writes a CPU profile of the whole process to
//     PATH when it exits (through main's return; a SIGKILL writes nothing).
//   - CELLNODE_CPUPROFILE_SPLIT=DURATION, beside it, ends a first profile
//     DURATION after the start, written to PATH.start, and profiles the rest
//     of the process's life into PATH: the start and the steady state apart.
const (
	envCPUProfile      = "CELLNODE_CPUPROFILE"
	envCPUProfileSplit = "CELLNODE_CPUPROFILE_SPLIT"
)

// startProfile starts the CPU profile that getenv asks for and returns the
// function that stops it and writes what is left; with no profile asked for
// it does nothing. A bad switch is reported on stderr and profiles nothing:
// it never keeps the command from running.
func startProfile(getenv func(string) string, stderr io.Writer) (stop func()) {
	path := getenv(envCPUProfile)
	if path == "" {
		return func() {}
	}
	var split time.Duration
	if v := getenv(envCPUProfileSplit); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "cellnode: %s=%q: want a positive duration such as 10s; not profiling\n", envCPUProfileSplit, v)
			return func() {}
		}
		split = d
	}
	first := path
	if split > 0 {
		first = path + ".start"
	}
	f, err := begin(first)
	if err != nil {
		fmt.Fprintf(stderr, "cellnode: %s: %v; not profiling\n", envCPUProfile, err)
		return func() {}
	}
	cur := make(chan *os.File, 1) // the file being written, nil once stopped
	cur <- f
	if split > 0 {
		time.AfterFunc(split, func() {
			f := <-cur
			if f == nil {
				cur <- nil
				return
			}
			end(f, stderr)
			next, err := begin(path)
			if err != nil {
				fmt.Fprintf(stderr, "cellnode: %s: %v\n", envCPUProfile, err)
			}
			cur <- next // nil on error: nothing more to stop
		})
	}
	return func() {
		if f := <-cur; f != nil {
			end(f, stderr)
		}
		cur <- nil
	}
}

// begin creates path and starts the CPU profile into it.
func begin(path string) (*os.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// end stops the CPU profile and closes its file.
func end(f *os.File, stderr io.Writer) {
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		fmt.Fprintf(stderr, "cellnode: %s: %v\n", envCPUProfile, err)
	}
}
