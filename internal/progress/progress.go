// Package progress shows that something long is under way (a build, a
// clone) on a terminal, and shows nothing anywhere else: output that is
// piped, redirected to a file or captured by a test stays as it was.
//
// A Bar draws a spinner with the elapsed time on its writer
// (github.com/schollz/progressbar) from a goroutine of its own until Done,
// which stops it and clears the line. A Bar for a writer that is not a
// terminal draws nothing and starts no goroutine. A Bar is safe for use by
// one goroutine; Done may be called more than once.
package progress

import (
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Terminal is a writer that says whether it is a terminal, for writers
// that are not an *os.File (a test's, or a wrapper's).
type Terminal interface {
	io.Writer
	IsTerminal() bool
}

// IsTerminal reports whether w is a terminal: a file (such as os.Stderr)
// whose descriptor is one (golang.org/x/term), or a Terminal that says so.
// nil is not.
func IsTerminal(w io.Writer) bool {
	switch w := w.(type) {
	case nil:
		return false
	case Terminal:
		return w.IsTerminal()
	case interface{ Fd() uintptr }:
		return term.IsTerminal(int(w.Fd()))
	}
	return false
}

// interval is how often a spinner is redrawn.
const interval = 100 * time.Millisecond

// Bar is one thing under way.
type Bar struct {
	bar  *progressbar.ProgressBar
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Spinner starts a spinner saying what is under way on w, if w is a
// terminal; otherwise it returns a Bar that does nothing.
func Spinner(w io.Writer, what string) *Bar {
	if !IsTerminal(w) {
		return &Bar{}
	}
	b := &Bar{
		bar: progressbar.NewOptions(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("cellnode: "+what),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionSetSpinnerChangeInterval(0), // the Bar's goroutine redraws
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetRenderBlankState(true),
		),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go b.spin()
	return b
}

func (b *Bar) spin() {
	defer close(b.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.bar.Add(1)
		}
	}
}

// Done stops the spinner, waits for its goroutine and clears its line.
func (b *Bar) Done() {
	if b.bar == nil {
		return
	}
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		_ = b.bar.Clear()
	})
}
