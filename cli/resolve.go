package cli

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/node/resolve"
	"github.com/spf13/cobra"
)

// SocketDirEnv names the cell socket directory, as the cell SDK reads it.
const SocketDirEnv = dirs.SocketEnv

func resolveCmd(e *env) *cobra.Command {
	var nf netFlags
	var r resolveFlags
	c := &cobra.Command{
		Use:   "resolve [--dir DIR] [--out DIR] [--format json|rust|go] [--offline] [--update]",
		Short: "Resolve a cell's dependencies for its build: endpoints out, Cell.lock updated",
		Long: `Resolve reads Cell.toml and, for each dependency:

  1. uses a cell running on this machine at once: a socket NAME.sock that
     accepts in the cell socket directory ($CELL_SOCKET_DIR);
  2. resolves the tag to a commit through git at the dependency's URL (or
     uses the commit Cell.lock pins, fetched from peers, when the URL cannot
     be reached) and checks the manifest's fingerprint against Cell.lock;
  3. finds the live instances delegated by the manifest's publishers, pings
     them in parallel (500 ms) and ranks them by latency;
  4. applies the policy: if the best instance is slower than max_latency_ms,
     or there is none, auto_spawn builds the cell from source (never a
     downloaded binary), starts it and waits 5 s for its socket; without
     auto_spawn resolve fails and says which rule stopped it.

It then writes NAME_instances.json (or .rs, or .go) into --out and Cell.lock
beside Cell.toml. A failed resolve leaves both as they were. With no
network (or --offline) only cells on this machine resolve.`,
		Example: `  cellnode resolve                               # in a cell's directory
  cellnode resolve --format rust --out "$OUT_DIR"  # from build.rs
  cellnode resolve --format go --out .             # from //go:generate
  cellnode resolve --update                        # accept a moved tag or a new fingerprint`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error { return resolveDeps(c.Context(), e, &nf, r) },
	}
	nf.add(c.Flags(), false)
	f := c.Flags()
	f.StringVar(&r.dir, "dir", ".", "the cell's directory (Cell.toml, Cell.lock)")
	f.StringVar(&r.out, "out", "", "where to write the endpoint files (default $OUT_DIR, else --dir)")
	f.StringVar(&r.format, "format", "json", "endpoint file format: json, rust or go")
	f.StringVar(&r.goPackage, "package", "main", "Go package name of .go endpoint files")
	f.BoolVar(&r.offline, "offline", false, "do not use the network: only cells on this machine resolve")
	f.BoolVar(&r.update, "update", false, "accept a tag that moved or a fingerprint that changed, and re-pin")
	f.DurationVar(&r.timeout, "timeout", 5*time.Minute, "give up after this long (builds included)")
	return c
}

// resolver holds one resolve run.

// resolveFlags are resolve's flags.
type resolveFlags struct {
	dir, out, format string
	goPackage        string
	offline, update  bool
	timeout          time.Duration
}

// resolveDeps runs resolve.Run with the flags: the endpoint files go to
// --out, else $OUT_DIR, else --dir; --offline is --bootstrap none.
func resolveDeps(ctx context.Context, e *env, nf *netFlags, r resolveFlags) error {
	switch r.format {
	case "json", "rust", "go":
	default:
		return usageErr("--format %q: want json, rust or go", r.format)
	}
	if r.out == "" {
		r.out = os.Getenv("OUT_DIR")
	}
	if r.offline {
		nf.bootstrap = []string{"none"}
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err := resolve.Run(ctx, resolve.Config{
		Dir: r.dir, Out: r.out, Format: r.format, GoPackage: r.goPackage, Home: nf.home,
		Offline: r.offline, Update: r.update, Log: e.stderr, Progress: e.stderr,
		Open: func(ctx context.Context, local bool) (*resolve.Session, error) { return openSession(ctx, e, nf, local) },
	})
	var in *resolve.InputError
	if errors.As(err, &in) {
		return usageErr("%v", err)
	}
	if err != nil {
		return failErr(err)
	}
	return nil
}
