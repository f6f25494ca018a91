package loopback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process of the benchmark. Its stdout and stderr go to a
// log file; its stdout lines are also kept for WaitLine. Its methods are
// safe for concurrent use.
type Proc struct {
	Name    string
	Started time.Time // just before the process was started
	cmd     *exec.Cmd
	logf    *os.File
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid once done is closed
	exitAt  time.Time     // when Wait returned; valid once done is closed

	mu      sync.Mutex
	lines   []string
	partial []byte
	changed chan struct{} // closed and replaced when a line arrives
}

// StartProc starts bin with args and env (added to the benchmark's own
// environment less every CELLNODE_ variable), its output going to
// logPath. The child gets SIGKILL if the benchmark dies first.
func StartProc(name, bin string, args, env []string, logPath string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("loopback: %s: %w", name, err)
	}
	p := &Proc{Name: name, logf: f, done: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = childEnv(env)
	p.cmd.Stdout = (*stdoutWriter)(p)
	p.cmd.Stderr = f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.Started = time.Now()
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("loopback: start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		p.exitAt = time.Now()
		p.mu.Lock()
		if len(p.partial) > 0 {
			p.lines = append(p.lines, string(p.partial))
			p.partial = nil
		}
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// TimeRun runs bin with args and env (as StartProc's) to its exit and
// returns how long it took, from just before the start to the exit
// reaped. Its output is thrown away but for the end of its stderr, which a
// failure (an exit other than 0) carries.
func TimeRun(ctx context.Context, bin string, args, env []string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv(env)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("loopback: %s %s: %w\n%s", bin, strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	return d, nil
}

// childEnv is the benchmark's environment without CELLNODE_ variables
// (a developer's CELLNODE_HOME or CELLNODE_BOOTSTRAP must not leak into
// the run), plus extra.
func childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CELLNODE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

type stdoutWriter Proc

func (w *stdoutWriter) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	if _, err := p.logf.Write(b); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	got := false
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.lines = append(p.lines, string(p.partial[:i]))
		p.partial = p.partial[i+1:]
		got = true
	}
	if got {
		close(p.changed)
		p.changed = make(chan struct{})
	}
	return len(b), nil
}

// Lines returns the stdout lines printed so far.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// WaitLine waits for a stdout line for which match returns true and
// returns it. It fails when ctx ends or the process exits first.
func (p *Proc) WaitLine(ctx context.Context, match func(string) bool) (string, error) {
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if match(p.lines[seen]) {
				l := p.lines[seen]
				p.mu.Unlock()
				return l, nil
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			// Lines flushed at exit are in p.lines now; look once more.
			p.mu.Lock()
			for ; seen < len(p.lines); seen++ {
				if match(p.lines[seen]) {
					l := p.lines[seen]
					p.mu.Unlock()
					return l, nil
				}
			}
			p.mu.Unlock()
			return "", fmt.Errorf("loopback: %s exited (%v) before printing the line waited for; see %s", p.Name, p.waitErr, p.logf.Name())
		case <-ctx.Done():
			return "", fmt.Errorf("loopback: %s: waiting for a line: %w", p.Name, ctx.Err())
		}
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitedAt returns when the process was seen to exit (when its wait
// returned), and false while it runs.
func (p *Proc) ExitedAt() (time.Time, bool) {
	select {
	case <-p.done:
		return p.exitAt, true
	default:
		return time.Time{}, false
	}
}

// Signal sends sig to the process; a process that has exited is not an
// error.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("loopback: signal %s: %w", p.Name, err)
	}
	return nil
}

// Wait waits for the process to exit and returns its exit code (-1 when a
// signal ended it). It fails when ctx ends first.
func (p *Proc) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("loopback: waiting for %s to exit: %w", p.Name, ctx.Err())
	}
}

// Stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits.
func (p *Proc) Stop(grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// LogPath is the file the process's output goes to.
func (p *Proc) LogPath() string { return p.logf.Name() }

// Tail returns the last n bytes of the process's log, for error messages.
func (p *Proc) Tail(n int64) string {
	f, err := os.Open(p.LogPath())
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}
