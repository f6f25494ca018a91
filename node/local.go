package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/safefile"
)

// RuntimeDirEnv names the environment variable that sets the runtime
// directory where running cells register themselves on this machine.
const RuntimeDirEnv = dirs.RuntimeEnv

// DefaultRuntimeDir returns $CELLNODE_RUNTIME_DIR, else
// $XDG_RUNTIME_DIR/cellnode, else <tmp>/cellnode-<uid> (dirs.Runtime).
func DefaultRuntimeDir() string { return dirs.Runtime() }

// LocalCell is what a running announcer leaves in the runtime directory:
// enough for a finder on this machine to find the cell with no network,
// and for `ps` to list it. Record holds the last signed instance record,
// which a finder verifies like any other.
type LocalCell struct {
	Name     string    `json:"name"`
	Peer     string    `json:"peer"`
	Endpoint string    `json:"endpoint"` // as given to run, e.g. ":9000"
	Local    []string  `json:"local_endpoints"`
	PID      int       `json:"pid"`
	Home     string    `json:"home"`
	Started  time.Time `json:"started"`
	Record   []byte    `json:"record,omitempty"`
}

func localPath(dir, peerID, name string) string {
	return filepath.Join(dir, peerID+"."+strings.ReplaceAll(name, "/", "_")+".json")
}

func writeLocal(dir string, c LocalCell) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := ownDir(dir); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return safefile.WriteFile(localPath(dir, c.Peer, c.Name), b, 0o600)
}

// maxLocalCellFile bounds one registered cell's file (a signed record and
// a few fields).
const maxLocalCellFile = 64 << 10

// LocalCells reads the cells registered in dir. Unreadable entries are
// skipped; a missing directory, or one another user owns or can write to,
// is no cells.
func LocalCells(dir string) []LocalCell {
	if ownDir(dir) != nil {
		return nil
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	var out []LocalCell
	for _, p := range paths {
		b, err := safefile.ReadFile(p, maxLocalCellFile) // never blocks on a FIFO
		if err != nil {
			continue
		}
		var c LocalCell
		if json.Unmarshal(b, &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// registerLocal records c in the node's runtime directory, unless the node
// has none.
func (n *Node) registerLocal(c LocalCell) error {
	if n.cfg.NoRuntimeDir {
		return nil
	}
	return writeLocal(n.cfg.RuntimeDir, c)
}

// unregisterLocal removes the node's entry for the cell name.
func (n *Node) unregisterLocal(name string) {
	if !n.cfg.NoRuntimeDir {
		_ = os.Remove(localPath(n.cfg.RuntimeDir, n.ID().String(), name))
	}
}

// localCells returns the cells registered in the node's runtime directory.
func (n *Node) localCells() []LocalCell {
	if n.cfg.NoRuntimeDir {
		return nil
	}
	return LocalCells(n.cfg.RuntimeDir)
}

// ownDir checks that dir belongs to this user and only this user can write
// to it: in a shared /tmp, another user could create it first.
func ownDir(dir string) error {
	return dirs.Own("node: runtime directory", dir)
}
