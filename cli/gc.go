package cli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/node/resolve"
	"github.com/spf13/cobra"
)

func gcCmd(e *env) *cobra.Command {
	var home string
	var dryRun bool
	var olderThan time.Duration
	c := &cobra.Command{
		Use:   "gc [--home DIR] [--older-than D] [--dry-run]",
		Short: "Remove cached builds, git remotes and fetched objects",
		Long: `Gc prunes the caches of a home: builds/ (the sources resolve checked out and
built for auto_spawn), repos/ (the git remotes resolve fetched) and
objects.git (the git objects fetched from peers for manifests and clones),
and the records of spawned cells that have exited. Each is fetched or built
again when needed.

It keeps what is in use: the build of a cell that resolve started and that
still runs, and objects.git while a node (cellnode run or bootstrap) runs
with this home. With --older-than it keeps builds and remotes modified more
recently than that. --dry-run lists what it would remove.`,
		Example: `  cellnode gc --dry-run
  cellnode gc --home /var/lib/cellnode --older-than 168h`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error { return gcHome(e, home, dryRun, olderThan) },
	}
	c.Flags().StringVar(&home, "home", "", "state directory (default $CELLNODE_HOME or ~/.cellnode)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
	c.Flags().DurationVar(&olderThan, "older-than", 0, "keep builds and remotes modified within this long")
	return c
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return strings.TrimSpace(fmt.Sprintf("%d B", n))
}

// gcHome removes what the caches of home no longer need.
func gcHome(e *env, home string, dryRun bool, olderThan time.Duration) error {
	if home == "" {
		home = dirs.Home()
	}
	if olderThan < 0 {
		return usageErr("--older-than must not be negative")
	}
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		return usageErr("--home %s: not a directory", home)
	}
	res, err := resolve.Prune(home, time.Now().Add(-olderThan), dryRun)
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	for _, r := range res.Removed {
		fmt.Fprintf(e.stdout, "%s %s (%s)\n", verb, r.Path, fmtBytes(r.Bytes))
	}
	if err != nil {
		return failErr(err)
	}
	for _, k := range res.Kept {
		fmt.Fprintf(e.stdout, "kept %s\n", k)
	}
	if len(res.Removed) == 0 {
		fmt.Fprintf(e.stdout, "nothing to remove in %s\n", home)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s %s in all\n", map[bool]string{true: "would free", false: "freed"}[dryRun], fmtBytes(res.Freed))
	return nil
}
