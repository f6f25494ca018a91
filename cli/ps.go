package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/safefile"

	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

// spawnedCell is what resolve leaves in <home>/spawned/ for a cell it built
// and started, so ps can list it.
type spawnedCell struct {
	Name    string    `json:"name"` // the dependency name
	Cell    string    `json:"cell"`
	PID     int       `json:"pid"`
	Socket  string    `json:"socket"`
	Commit  string    `json:"commit"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Log     string    `json:"log"`
}

func writeSpawned(home string, c spawnedCell) {
	b, _ := json.Marshal(c)
	dir := filepath.Join(home, "spawned")
	if os.MkdirAll(dir, 0o700) == nil {
		_ = safefile.WriteFile(filepath.Join(dir, c.Name+".json"), b, 0o600)
	}
}

func readSpawned(home string) []spawnedCell {
	paths, _ := filepath.Glob(filepath.Join(home, "spawned", "*.json"))
	var out []spawnedCell
	for _, p := range paths {
		var c spawnedCell
		if b, err := safefile.ReadFile(p, 64<<10); err == nil && json.Unmarshal(b, &c) == nil {
			out = append(out, c)
		}
	}
	return out
}

// psRow is one cell running on this machine.
type psRow struct {
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

func psCmd(e *env) *cobra.Command {
	var asJSON bool
	var home string
	c := &cobra.Command{
		Use:   "ps [--json]",
		Short: "List the cells running on this machine",
		Long: `Ps lists the cells running on this machine: those announced by a cellnode
run (from the runtime directory, $CELLNODE_RUNTIME_DIR), those that resolve
built and started, and any other socket in the cell socket directory
($CELL_SOCKET_DIR). For each: name, endpoint or socket, pid where known,
uptime, whether it is being announced, and its manifest commit.`,
		Example: `  cellnode ps
  cellnode ps --json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			if home == "" {
				home = node.DefaultHome()
			}
			rows := psRows(home)
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"cells": rows})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tENDPOINT\tPID\tUPTIME\tANNOUNCED\tMANIFEST\tSOURCE")
			for _, r := range rows {
				pid := "-"
				if r.PID > 0 {
					pid = fmt.Sprint(r.PID)
				}
				ann := "no"
				if r.Announced {
					ann = "yes"
				}
				m := dash(shortCID(r.Manifest))
				if r.Version != "" {
					m = r.Version + " " + m
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Endpoint, pid, dash(r.Uptime), ann, m, r.Source)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&home, "home", "", "state directory, for the cells resolve started (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

func psRows(home string) []psRow {
	now := time.Now()
	var rows []psRow
	sockets := map[string]bool{}
	for _, lc := range node.LocalCells(node.DefaultRuntimeDir()) {
		if !alive(lc.PID) {
			continue
		}
		r := psRow{Name: lc.Name, Endpoint: lc.Endpoint, PID: lc.PID, Started: lc.Started, Source: "cellnode run"}
		if rec, err := record.Verify(lc.Record, lc.Name, now); err == nil {
			r.Announced = !rec.Withdrawn
			if rec.Manifest.Defined() {
				r.Manifest = rec.Manifest.String()
			}
		}
		rows = append(rows, r)
	}
	for _, sc := range readSpawned(home) {
		if !alive(sc.PID) {
			continue
		}
		sockets[filepath.Base(sc.Socket)] = true
		rows = append(rows, psRow{Name: sc.Cell, Endpoint: "unix:" + sc.Socket, PID: sc.PID, Started: sc.Started,
			Manifest: sc.Commit, Version: sc.Version, Source: "spawned by resolve"})
	}
	socks, _ := filepath.Glob(filepath.Join(socketDir(), "*.sock"))
	for _, s := range socks {
		if sockets[filepath.Base(s)] {
			continue
		}
		if _, err := node.Probe(context.Background(), "unix:"+s, node.ProbeTimeout); err != nil {
			continue
		}
		rows = append(rows, psRow{Name: strings.TrimSuffix(filepath.Base(s), ".sock"), Endpoint: "unix:" + s, Source: "socket"})
	}
	for i := range rows {
		if !rows[i].Started.IsZero() {
			rows[i].Uptime = now.Sub(rows[i].Started).Round(time.Second).String()
		}
	}
	slices.SortFunc(rows, func(a, b psRow) int { return strings.Compare(a.Name+a.Endpoint, b.Name+b.Endpoint) })
	return rows
}

// alive reports whether a process with this pid exists.
func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}
