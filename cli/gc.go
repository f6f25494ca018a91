package cli

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

// Caches under a home that gc prunes.
const (
	buildsDir  = "builds"  // sources resolve checked out and built, one per dependency and commit
	reposDir   = "repos"   // git remotes resolve fetched (gitobj.Remotes)
	spawnedDir = "spawned" // what resolve started (spawnedCell)
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
		RunE: func(*cobra.Command, []string) error {
			if home == "" {
				home = node.DefaultHome()
			}
			if olderThan < 0 {
				return usageErr("--older-than must not be negative")
			}
			if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
				return usageErr("--home %s: not a directory", home)
			}
			plan, kept := gcPlan(home, time.Now().Add(-olderThan))
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			var freed int64
			for _, p := range plan {
				size := dirSize(p)
				if !dryRun {
					if err := os.RemoveAll(p); err != nil {
						return failErr(fmt.Errorf("gc: %w", err))
					}
				}
				freed += size
				rel, _ := filepath.Rel(home, p)
				fmt.Fprintf(e.stdout, "%s %s (%s)\n", verb, rel, fmtBytes(size))
			}
			for _, k := range kept {
				fmt.Fprintf(e.stdout, "kept %s\n", k)
			}
			if len(plan) == 0 {
				fmt.Fprintf(e.stdout, "nothing to remove in %s\n", home)
				return nil
			}
			fmt.Fprintf(e.stdout, "%s %s in all\n", map[bool]string{true: "would free", false: "freed"}[dryRun], fmtBytes(freed))
			return nil
		},
	}
	c.Flags().StringVar(&home, "home", "", "state directory (default $CELLNODE_HOME or ~/.cellnode)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
	c.Flags().DurationVar(&olderThan, "older-than", 0, "keep builds and remotes modified within this long")
	return c
}

// gcPlan returns the paths to remove and, for the operator, what was kept
// and why.
func gcPlan(home string, before time.Time) (remove []string, kept []string) {
	inUse := map[string]bool{} // build directories of running spawned cells
	for _, sc := range readSpawned(home) {
		path := filepath.Join(home, spawnedDir, sc.Name+".json")
		if alive(sc.PID) {
			inUse[sc.Name+"-"+sc.Commit] = true
		} else {
			remove = append(remove, path)
		}
	}
	old := func(p string) bool {
		fi, err := os.Stat(p)
		return err == nil && fi.ModTime().Before(before)
	}
	for _, dir := range []string{buildsDir, reposDir} {
		ents, _ := os.ReadDir(filepath.Join(home, dir))
		for _, ent := range ents {
			p := filepath.Join(home, dir, ent.Name())
			switch {
			case dir == buildsDir && inUse[ent.Name()]:
				kept = append(kept, filepath.Join(dir, ent.Name())+": a cell started from it is running")
			case !old(p):
				kept = append(kept, filepath.Join(dir, ent.Name())+": modified recently (--older-than)")
			default:
				remove = append(remove, p)
			}
		}
	}
	objects := filepath.Join(home, node.ObjectCache)
	if _, err := os.Stat(objects); err == nil {
		if _, err := node.Dial(home); err == nil {
			kept = append(kept, node.ObjectCache+": a node is running with this home")
		} else {
			remove = append(remove, objects)
		}
	}
	sort.Strings(remove)
	return remove, kept
}

func dirSize(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
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
