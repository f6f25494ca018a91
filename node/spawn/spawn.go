// Package spawn runs cells on this machine for resolve: it probes a cell's
// socket in the cell socket directory (dirs.Socket), builds a cell from its
// checked-out source with its manifest's build command, starts it with
// CELL_SOCKET_DIR set and waits for its socket, and records what it started
// in the home (<home>/spawned/NAME.json) so that ps lists it and gc keeps
// its build. ListRunning is what ps shows.
//
// Started cells outlive the process that started them (their own process
// group). Start serialises spawning in one socket directory with a lock
// file there. Everything here is safe for concurrent use.
package spawn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/progress"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
)

// Timeout is how long a started cell has to open its socket.
const Timeout = 5 * time.Second

// lockName is the lock file, in the cell socket directory, that serialises
// the spawning of cells there.
const lockName = ".cellnode-spawn.lock"

// Probe dials name in the cell socket directory. Nothing there, or nothing
// that answers, is ok == false and no error; a socket that another user
// owns, or a directory that is not this user's alone, is an error (another
// user could serve anything there). The endpoint is "unix://NAME".
func Probe(ctx context.Context, name string) (endpoint string, latencyMS float64, ok bool, err error) {
	path := filepath.Join(dirs.Socket(), name)
	if _, err := os.Lstat(path); err != nil {
		return "", 0, false, nil
	}
	if err := safefile.CheckSocket("cell socket", path); err != nil {
		return "", 0, false, fmt.Errorf("%w (set %s to a directory of your own)", err, dirs.SocketEnv)
	}
	rtt, err := node.Probe(ctx, "unix:"+path, node.ProbeTimeout)
	if err != nil {
		return "", 0, false, nil
	}
	return "unix://" + name, float64(rtt.Microseconds()) / 1000, true, nil
}

// Spec is one cell to build and start.
type Spec struct {
	// Name is the dependency's name: the cell's log is
	// <Home>/logs/NAME.log, its state file <Home>/spawned/NAME.json, and
	// its socket NAME.sock unless the manifest names one. Required.
	Name string
	// Manifest is the cell's manifest; its build section says how to build
	// and what to start. Required, with a build section.
	Manifest *manifest.Manifest
	// Commit is the CID of the commit Src holds, recorded in the state
	// file.
	Commit string
	// Src is the checked-out source at Commit. Required.
	Src string
	// Home holds the log and the state file. Required.
	Home string
	// Progress shows the build while it runs when it is a terminal
	// (internal/progress); nil shows nothing.
	Progress io.Writer
	// Log is told, once, when Start waits for another spawn in the socket
	// directory; nil discards.
	Log io.Writer
}

// Start builds the cell of s in its source directory, starts its binary
// with CELL_SOCKET_DIR set, waits up to Timeout for its socket to accept,
// and records it. A cell already answering on the socket (started
// meanwhile by another resolve) is used as it is. A cell that exits or
// does not open its socket in time is stopped, and the error holds the end
// of its log.
func Start(ctx context.Context, s Spec) (endpoint string, latencyMS float64, err error) {
	m := s.Manifest
	if m == nil || m.Build == nil {
		return "", 0, errors.New("spawn: the manifest has no build section")
	}
	if len(m.Build.Command) == 0 {
		return "", 0, fmt.Errorf("the manifest of %s has no build command", m.Name)
	}
	work := filepath.Join(s.Src, m.Build.Dir)
	sockDir := dirs.Socket()
	if err := dirs.Ensure("cell socket directory", sockDir); err != nil {
		return "", 0, fmt.Errorf("%w (or set %s to a directory of your own)", err, dirs.SocketEnv)
	}
	logw := s.Log
	if logw == nil {
		logw = io.Discard
	}
	unlock, err := Lock(ctx, filepath.Join(sockDir, lockName), "another resolve spawning a cell in "+sockDir, logw)
	if err != nil {
		return "", 0, err
	}
	defer unlock()
	sock := m.Build.Socket
	if sock == "" {
		sock = s.Name + ".sock"
	}
	// Another resolve (with another home) may have started it meanwhile.
	if ep, lat, ok, _ := Probe(ctx, sock); ok {
		return ep, lat, nil
	}
	env := append(os.Environ(), dirs.SocketEnv+"="+sockDir)
	build := exec.CommandContext(ctx, m.Build.Command[0], m.Build.Command[1:]...)
	build.Dir, build.Env = work, env
	bar := progress.Spinner(s.Progress, "building "+m.Name)
	out, err := build.CombinedOutput()
	bar.Done()
	if err != nil {
		return "", 0, fmt.Errorf("build of %s failed: %v\n%s", m.Name, err, tail(out, 40))
	}
	if m.Build.Binary == "" {
		return "", 0, fmt.Errorf("the manifest of %s names no binary to start", m.Name)
	}
	logPath := filepath.Join(s.Home, "logs", s.Name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return "", 0, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", 0, err
	}
	defer logf.Close()
	bin := filepath.Join(work, m.Build.Binary)
	cmd := exec.Command(bin)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = work, env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives resolve, apart from its signals
	if err := cmd.Start(); err != nil {
		return "", 0, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(Timeout)
	for {
		if ep, lat, ok, _ := Probe(ctx, sock); ok {
			err := Write(s.Home, Cell{Name: s.Name, Cell: m.Name, PID: cmd.Process.Pid, Socket: filepath.Join(sockDir, sock),
				Commit: s.Commit, Version: m.Version, Started: time.Now().UTC(), Log: logPath})
			if err != nil {
				fmt.Fprintf(logw, "cellnode: %s: started, but not recorded for ps: %v\n", s.Name, err)
			}
			return ep, lat, nil
		}
		select {
		case err := <-exited:
			return "", 0, fmt.Errorf("%s exited before opening its socket (%v); its log: %s\n%s", bin, err, logPath, tailFile(logPath))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return "", 0, fmt.Errorf("%s did not open %s within %v; stopped it (log: %s)", bin, filepath.Join(sockDir, sock), Timeout, logPath)
		}
	}
}

// Lock takes an exclusive lock (flock) on path, created with mode 0600 if
// missing, waiting until ctx ends; it tells w once that it waits, naming
// what holds it. The lock goes when the returned function is called or the
// process ends; children started meanwhile do not inherit it.
func Lock(ctx context.Context, path, what string, w io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told {
			fmt.Fprintf(w, "cellnode: waiting for %s to finish (%s is locked)\n", what, path)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s (%s): %w", what, path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	return tail(b, 20)
}
