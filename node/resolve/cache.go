package resolve

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/spawn"
)

// The caches resolve keeps in a home, which Prune prunes.
const (
	BuildsDir = "builds" // sources resolve checked out and built, one per dependency and commit
	ReposDir  = "repos"  // git remotes resolve fetched (gitobj.Remotes)
)

// Removal is one path Prune removed, or would remove, and its size.
type Removal struct {
	Path  string // relative to the home
	Bytes int64
}

// PruneResult is what Prune did, or would do.
type PruneResult struct {
	Removed []Removal // sorted by path
	Kept    []string  // "PATH: why", for the operator
	Freed   int64     // bytes, the sum of Removed
}

// Prune removes from home what no running cell and no running node uses:
// the builds of cells that are not running, git remotes, the records of
// exited cells (spawn.StateDir), and the node's object cache when no node
// runs with home. Builds and remotes modified after before are kept. With
// dryRun it removes nothing and says what it would remove. An error stops
// it; what was removed before stays removed.
func Prune(home string, before time.Time, dryRun bool) (PruneResult, error) {
	var res PruneResult
	remove, kept := prunePlan(home, before)
	res.Kept = kept
	for _, p := range remove {
		size := dirSize(p)
		if !dryRun {
			if err := os.RemoveAll(p); err != nil {
				return res, fmt.Errorf("gc: %w", err)
			}
		}
		rel, _ := filepath.Rel(home, p)
		res.Removed = append(res.Removed, Removal{Path: rel, Bytes: size})
		res.Freed += size
	}
	return res, nil
}

// prunePlan returns the paths to remove and, for the operator, what was
// kept and why.
func prunePlan(home string, before time.Time) (remove []string, kept []string) {
	inUse := map[string]bool{} // build directories of running spawned cells
	for _, sc := range spawn.List(home) {
		path := filepath.Join(home, spawn.StateDir, sc.Name+".json")
		if spawn.Alive(sc.PID) {
			inUse[sc.Name+"-"+sc.Commit] = true
		} else {
			remove = append(remove, path)
		}
	}
	old := func(p string) bool {
		fi, err := os.Stat(p)
		return err == nil && fi.ModTime().Before(before)
	}
	for _, dir := range []string{BuildsDir, ReposDir} {
		ents, _ := os.ReadDir(filepath.Join(home, dir))
		for _, ent := range ents {
			p := filepath.Join(home, dir, ent.Name())
			switch {
			case dir == BuildsDir && inUse[ent.Name()]:
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
