package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/node/spawn"
	"github.com/spf13/cobra"
)

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
		RunE: func(c *cobra.Command, _ []string) error { return ps(c.Context(), e, home, asJSON) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().StringVar(&home, "home", "", "state directory, for the cells resolve started (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

// ps prints the cells running on this machine (spawn.ListRunning).
func ps(ctx context.Context, e *env, home string, asJSON bool) error {
	if home == "" {
		home = dirs.Home()
	}
	rows := spawn.ListRunning(ctx, home)
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
}
