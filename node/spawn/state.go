package spawn

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/node"
)

// StateDir is the directory, in a home, that holds one file NAME.json per
// cell that Start started.
const StateDir = "spawned"

// maxStateFile bounds one state file.
const maxStateFile = 64 << 10

// Cell is what Start leaves in <home>/spawned/ for a cell it built and
// started, so that ps can list it and gc keeps its build.
type Cell struct {
	Name    string    `json:"name"` // the dependency name
	Cell    string    `json:"cell"`
	PID     int       `json:"pid"`
	Socket  string    `json:"socket"`
	Commit  string    `json:"commit"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Log     string    `json:"log"`
}

// Write records c in home's state directory, replacing any record of the
// same name atomically.
func Write(home string, c Cell) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	dir := filepath.Join(home, StateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return safefile.WriteFile(filepath.Join(dir, c.Name+".json"), b, 0o600)
}

// List returns the cells recorded in home's state directory, running or
// not; unreadable records are skipped.
func List(home string) []Cell {
	paths, _ := filepath.Glob(filepath.Join(home, StateDir, "*.json"))
	var out []Cell
	for _, p := range paths {
		var c Cell
		if b, err := safefile.ReadFile(p, maxStateFile); err == nil && json.Unmarshal(b, &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// Alive reports whether a process with this pid exists.
func Alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// Running is one cell running on this machine, as ps lists it.
type Running struct {
	Name      string    `json:"name"`
	Endpoint  string    `json:"endpoint"`
	PID       int       `json:"pid,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Uptime    string    `json:"uptime,omitempty"`
	Announced bool      `json:"announced"`
	Manifest  string    `json:"manifest,omitempty"` // commit CID
	Version   string    `json:"version,omitempty"`
	Source    string    `json:"source"` // "cellnode run", "spawned by resolve", "socket"
}

// ListRunning returns the cells running on this machine, sorted by name
// and endpoint: those a live cellnode run registered in the runtime
// directory (dirs.Runtime), those Start started with this home that are
// still alive, and any other socket in the cell socket directory
// (dirs.Socket) that accepts.
func ListRunning(ctx context.Context, home string) []Running {
	now := time.Now()
	var rows []Running
	sockets := map[string]bool{}
	for _, lc := range node.LocalCells(dirs.Runtime()) {
		if !Alive(lc.PID) {
			continue
		}
		r := Running{Name: lc.Name, Endpoint: lc.Endpoint, PID: lc.PID, Started: lc.Started, Source: "cellnode run"}
		if rec, err := record.Verify(lc.Record, lc.Name, now); err == nil {
			r.Announced = !rec.Withdrawn
			if rec.Manifest.Defined() {
				r.Manifest = rec.Manifest.String()
			}
		}
		rows = append(rows, r)
	}
	for _, sc := range List(home) {
		if !Alive(sc.PID) {
			continue
		}
		sockets[filepath.Base(sc.Socket)] = true
		rows = append(rows, Running{Name: sc.Cell, Endpoint: "unix:" + sc.Socket, PID: sc.PID, Started: sc.Started,
			Manifest: sc.Commit, Version: sc.Version, Source: "spawned by resolve"})
	}
	socks, _ := filepath.Glob(filepath.Join(dirs.Socket(), "*.sock"))
	for _, s := range socks {
		if sockets[filepath.Base(s)] {
			continue
		}
		if _, err := node.Probe(ctx, "unix:"+s, node.ProbeTimeout); err != nil {
			continue
		}
		rows = append(rows, Running{Name: strings.TrimSuffix(filepath.Base(s), ".sock"), Endpoint: "unix:" + s, Source: "socket"})
	}
	for i := range rows {
		if !rows[i].Started.IsZero() {
			rows[i].Uptime = now.Sub(rows[i].Started).Round(time.Second).String()
		}
	}
	slices.SortFunc(rows, func(a, b Running) int { return strings.Compare(a.Name+a.Endpoint, b.Name+b.Endpoint) })
	return rows
}
