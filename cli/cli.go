// Package cli is the cellnode command line: commands, flags, and output for
// people (tables) and programs (--json). It is a library: Run takes the
// arguments and the writers, so tests run commands in process and read what
// they print. Commands on a machine where a node runs talk to it through its
// local API instead of starting a node of their own.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cellnode/cellnode/internal/logs"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK       = 0 // success
	ExitFailure  = 1 // the command ran and failed, or found nothing
	ExitUsage    = 2 // bad usage or input
	exitInternal = 1
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, a...)}
}

// failErr is an error that exits 1 after printing its message; an error
// that already carries an exit code keeps it.
func failErr(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: ExitFailure, err: err}
}

// silentExit exits with code without printing anything more.
type silentExit int

func (s silentExit) Error() string { return fmt.Sprintf("exit %d", int(s)) }

// env is what commands share: the writers and the logger.
type env struct {
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
	// exiting: the process exits when Run returns (RunExiting), so a
	// one-shot command's network session closes the short way, after
	// its answer is printed (resolve.Session.CloseAtExit).
	exiting bool
}

// logger returns a logger on stderr at the --log-level, or at def when the
// flag was not given.
func (e *env) logger(def slog.Level) *slog.Logger {
	lvl := def
	if e.logLevel != "" {
		_ = lvl.UnmarshalText([]byte(e.logLevel))
	}
	h, err := logs.NewHandler(e.stderr, e.logFormat, lvl)
	if err != nil { // checked in PersistentPreRunE
		h, _ = logs.NewHandler(e.stderr, "text", lvl)
	}
	return slog.New(h)
}

// Run runs the cellnode command line with args (without the program name)
// and returns the process exit code. ctx ends long-running commands (run,
// bootstrap) cleanly; main cancels it on SIGINT and SIGTERM.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, &env{stdout: stdout, stderr: stderr}, args)
}

// RunExiting is Run for a process that exits as soon as it returns (the
// cellnode command): a find's short-lived node then only saves its peers
// and closes its connections once the answer is printed, and leaves the
// rest of its teardown to the exit (node.Node.CloseAtExit). A caller that
// goes on running, such as a test, uses Run.
func RunExiting(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, &env{stdout: stdout, stderr: stderr, exiting: true}, args)
}

func runEnv(ctx context.Context, e *env, args []string) int {
	root := newRoot(e)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetArgs(args)

	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var se silentExit
	if errors.As(err, &se) {
		return int(se)
	}
	var ee *exitError
	code := exitInternal
	if errors.As(err, &ee) {
		code = ee.code
	} else if strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)") {
		code = ExitUsage
	}
	fmt.Fprintf(e.stderr, "cellnode: %v\n", err)
	return code
}

// exactArgs is cobra.ExactArgs with a usage exit code and a clearer message.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErr("%s takes %s\nRun '%s --help' for usage.", c.CommandPath(), what, c.CommandPath())
		}
		return nil
	}
}

// newRoot builds the command tree.
func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "cellnode",
		Short: "Find and announce cells on a peer-to-peer network",
		Long: `cellnode replaces the central cell registry with a peer-to-peer network.
Each cell runs "cellnode run" beside its service; the node publishes signed
60-second instance records to a Kademlia DHT, and "cellnode find" returns the
live instances of a cell ranked by measured latency.`,
		Example: `  cellnode demo                       # a whole network on loopback, then exit
  cellnode run --name acme/exchange --endpoint :9000
  cellnode find acme/exchange`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&e.logLevel, "log-level", "", "log level: debug, info, warn, error (default info for run and bootstrap, warn otherwise)")
	root.PersistentFlags().StringVar(&e.logFormat, "log-format", "text", "log format: text or json (libp2p's and kad-dht's logs too)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%v\nRun '%s --help' for usage.", err, c.CommandPath())
	})
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		var l slog.Level
		if e.logLevel != "" && l.UnmarshalText([]byte(e.logLevel)) != nil {
			return usageErr("--log-level %q: want debug, info, warn or error", e.logLevel)
		}
		return routeLogs(e)
	}
	root.AddCommand(runCmd(e), agentCmd(e), findCmd(e), bootstrapCmd(e), manifestCmd(e), cloneCmd(e), keyCmd(e), recordCmd(e), idCmd(e), initCmd(e), addCmd(e), resolveCmd(e), psCmd(e), demoCmd(e), simCmd(e))
	root.AddCommand(statusCmd(e), versionCmd(e), gcCmd(e))
	addCompletions(root)
	return root
}
