package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the command: CELLNODE_MAIN_TEST=main runs
// main with CELLNODE_MAIN_ARGS, =stuck runs the signal handling around a
// command that ignores being stopped.
func TestMain(m *testing.M) {
	switch os.Getenv("CELLNODE_MAIN_TEST") {
	case "main":
		os.Args = append([]string{"cellnode"}, strings.Fields(os.Getenv("CELLNODE_MAIN_ARGS"))...)
		main()
	case "stuck":
		grace, _ := time.ParseDuration(os.Getenv("CELLNODE_MAIN_GRACE"))
		os.Exit(run(nil, os.Stdout, os.Stderr, func(ctx context.Context, _ []string, _, stderr io.Writer) int {
			fmt.Fprintln(stderr, "ready")
			<-ctx.Done()
			fmt.Fprintln(stderr, "ignoring the stop")
			time.Sleep(time.Hour)
			return 0
		}, grace))
	}
	os.Exit(m.Run())
}

// proc is the test binary started as the command, its stderr read line by
// line.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	all   strings.Builder
}

func start(t *testing.T, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(os.Args[0], "-test.run", "^$"), lines: make(chan string, 100)}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// waitLine reads stderr until a line contains s.
func (p *proc) waitLine(t *testing.T, s string) {
	t.Helper()
	for l := range p.lines {
		p.all.WriteString(l + "\n")
		if strings.Contains(l, s) {
			return
		}
	}
	t.Fatalf("stderr ended without %q:\n%s", s, p.all.String())
}

// wait returns the exit code, once stderr is read to its end.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	for l := range p.lines {
		p.all.WriteString(l + "\n")
	}
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestSecondSignalExits: the first SIGTERM starts a graceful stop; when the
// command does not stop, a second one exits at once with 128 + 15. (Before,
// the second was swallowed: the signal context's stop was never called.)
func TestSecondSignalExits(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		p := start(t, "CELLNODE_MAIN_TEST=stuck", "CELLNODE_MAIN_GRACE=1h")
		p.waitLine(t, "ready")
		p.cmd.Process.Signal(sig)
		p.waitLine(t, "ignoring the stop")
		p.cmd.Process.Signal(sig)
		if code := p.wait(t); code != 128+int(sig) || !strings.Contains(p.all.String(), "again: exiting now") {
			t.Fatalf("%v twice: exit %d\n%s", sig, code, p.all.String())
		}
	}
}

// TestGraceBounded: a command that does not stop after the first signal
// is given up on when the grace period ends.
func TestGraceBounded(t *testing.T) {
	p := start(t, "CELLNODE_MAIN_TEST=stuck", "CELLNODE_MAIN_GRACE=100ms")
	p.waitLine(t, "ready")
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t); code != 1 || !strings.Contains(p.all.String(), "did not stop within 100ms") {
		t.Fatalf("exit %d\n%s", code, p.all.String())
	}
}

// TestFirstSignalStopsRun: the real `cellnode run` process, one SIGTERM:
// it withdraws and exits 0.
func TestFirstSignalStopsRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	args := fmt.Sprintf("run --name acme/exchange --endpoint %s --dir %s --bootstrap none --home %s --listen /ip4/127.0.0.1/tcp/0 --check-interval 100ms --log-level info",
		ln.Addr(), t.TempDir(), t.TempDir())
	p := start(t, "CELLNODE_MAIN_TEST=main", "CELLNODE_MAIN_ARGS="+args, "CELLNODE_RUNTIME_DIR="+t.TempDir())
	p.waitLine(t, "visible on this machine")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 || !strings.Contains(p.all.String(), "stopping") || !strings.Contains(p.all.String(), "withdrawing") {
		t.Fatalf("exit %d\n%s", code, p.all.String())
	}
}

// TestOneShot: which command lines run without garbage collection until
// oneShotHeap. Long-running commands, help and an empty line keep Go's
// default.
func TestOneShot(t *testing.T) {
	for _, c := range []struct {
		args string
		want bool
	}{
		{"find acme/exchange", true},
		{"--log-level debug find acme/exchange", true},
		{"--log-format=json status", true},
		{"-h", false},
		{"", false},
		{"run --name acme/exchange --endpoint 127.0.0.1:8080", false},
		{"--log-level debug run", false},
		{"bootstrap", false},
		{"agent", false},
		{"sim --nodes 10", false},
		{"demo", false},
		{"-- find", false},
		{"--log-level run find", true}, // "run" is --log-level's value
	} {
		if got := oneShot(strings.Fields(c.args)); got != c.want {
			t.Errorf("oneShot(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
