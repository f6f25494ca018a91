// Command cellnode announces and finds cells on a peer-to-peer network.
// See the README and `cellnode --help`.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/cli"
	"github.com/cellnode/cellnode/internal/logs"
)

// gracePeriod bounds the graceful stop that the first SIGINT or SIGTERM
// starts (a run withdraws its records in it).
const gracePeriod = 15 * time.Second

func main() {
	// libp2p's and kad-dht's logs go to the same place as ours, errors
	// only (their warnings are mostly about peers going away, which is
	// routine here); cli.Run applies --log-format to them.
	h, _ := logs.NewHandler(os.Stderr, "text", slog.LevelDebug)
	sw := logs.NewSwitch(h, logs.Levels{Default: slog.LevelError})
	logs.Route(sw)
	slog.SetDefault(slog.New(sw))
	if oneShot(os.Args[1:]) {
		// A one-shot command allocates a few tens of MiB and exits within a
		// second; collecting that garbage cost about a tenth of a cold
		// find's CPU. It collects only once its heap nears oneShotHeap.
		debug.SetGCPercent(-1)
		debug.SetMemoryLimit(oneShotHeap)
	}

	stopProfile := startProfile(os.Getenv, os.Stderr)
	code := run(os.Args[1:], os.Stdout, os.Stderr, cli.RunExiting, gracePeriod)
	stopProfile()
	os.Exit(code)
}

// oneShotHeap is the heap at which a one-shot command starts collecting
// garbage.
const oneShotHeap = 256 << 20

// longRunning are the commands that run until stopped (or, for sim and demo,
// for minutes): they keep Go's default garbage collection.
var longRunning = map[string]bool{"run": true, "agent": true, "bootstrap": true, "sim": true, "demo": true}

// oneShot reports whether args name a command that does one job and exits:
// the first argument that is not a flag is not a long-running command.
// Flags before the command (only --log-level and --log-format take a value)
// are skipped.
func oneShot(args []string) bool {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return false
		case a == "--log-level" || a == "--log-format":
			i++ // its value
		case strings.HasPrefix(a, "-"):
		default:
			return !longRunning[a]
		}
	}
	return false // no command: help
}

// command is cli.Run's shape.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) int

// run runs cmd with a context that the first SIGINT or SIGTERM cancels, and
// returns its exit code. If cmd has not returned grace after that signal,
// run gives up on it and returns 1; a second signal returns at once, with
// 128 + the signal's number, as a shell reports a process it killed.
func run(args []string, stdout, stderr io.Writer, cmd command, grace time.Duration) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- cmd(ctx, args, stdout, stderr) }()
	var sig os.Signal
	select {
	case code := <-done:
		return code
	case sig = <-sigs:
	}
	cancel()
	fmt.Fprintf(stderr, "cellnode: %v: stopping (again to exit at once)\n", sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case code := <-done:
		return code
	case sig = <-sigs:
		fmt.Fprintf(stderr, "cellnode: %v again: exiting now\n", sig)
		if s, ok := sig.(syscall.Signal); ok {
			return 128 + int(s)
		}
		return 1
	case <-t.C:
		fmt.Fprintf(stderr, "cellnode: did not stop within %v; exiting\n", grace)
		return 1
	}
}
