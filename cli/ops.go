package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cellnode/cellnode/internal/buildinfo"
	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/logs"
	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

// routeLogs checks --log-format and points libp2p's and kad-dht's logs
// (routed by main, see internal/logs) at this command's stderr in that
// format.
func routeLogs(e *env) error {
	if _, err := logs.NewHandler(io.Discard, e.logFormat, slog.LevelInfo); err != nil {
		return usageErr("--log-format %q: want text or json", e.logFormat)
	}
	if sw := logs.Routed(); sw != nil {
		h, _ := logs.NewHandler(e.stderr, e.logFormat, slog.LevelDebug)
		sw.Set(h)
	}
	return nil
}

// addCompletions enables cobra's completion command and completes the
// values of the flags that take a fixed set.
func addCompletions(root *cobra.Command) {
	fixed := func(vals ...string) cobra.CompletionFunc {
		return cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp)
	}
	_ = root.RegisterFlagCompletionFunc("log-format", fixed(logs.Formats...))
	_ = root.RegisterFlagCompletionFunc("log-level", fixed("debug", "info", "warn", "error"))
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("dht-mode") != nil {
			_ = c.RegisterFlagCompletionFunc("dht-mode", fixed("auto", "server", "client"))
		}
		if c.Flags().Lookup("format") != nil {
			_ = c.RegisterFlagCompletionFunc("format", fixed("json", "rust", "go"))
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	root.CompletionOptions.HiddenDefaultCmd = false
}

func versionCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print cellnode's version and the commit it was built from",
		Long: `Version prints the module version (v1.2.3 for a binary from
"go install github.com/cellnode/cellnode/cmd/cellnode@v1.2.3", "(devel)" for
one built in a work tree), the VCS revision and time the Go toolchain
stamped into the binary, and the Go version.`,
		Example: `  cellnode version
  cellnode version --json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error { return printVersion(e, asJSON) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return c
}

func statusCmd(e *env) *cobra.Command {
	var asJSON bool
	var home string
	c := &cobra.Command{
		Use:   "status [--json] [--home DIR]",
		Short: "Show what the node running on this machine is doing",
		Long: `Status asks the node running with --home (cellnode run or cellnode bootstrap)
through its local API: its peer ID and version, the mode of each DHT (WAN,
LAN) and its routing-table size, the addresses it listens on, announces and
was observed at, its peers and connections, whether each bootstrap peer is
connected, and each announced cell with its health, last sequence number,
storers and last publish. It fails (exit 1) when no node runs there.`,
		Example: `  cellnode status
  cellnode status --home /var/lib/cellnode --json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error { return showStatus(c, e, asJSON, home) },
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().StringVar(&home, "home", "", "the running node's state directory (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

func printStatus(w io.Writer, st *node.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	list := func(k string, vs []string) {
		if len(vs) == 0 {
			row(k, "-")
		}
		for i, v := range vs {
			if i > 0 {
				k = ""
			}
			row(k, v)
		}
	}
	row("peer", st.Peer)
	row("version", st.Version)
	if !st.Started.IsZero() {
		row("started", fmt.Sprintf("%s (up %s)", st.Started.Format(time.RFC3339), now.Sub(st.Started).Round(time.Second)))
	}
	var dhts []string
	for _, k := range slices.Sorted(maps.Keys(st.Modes)) {
		dhts = append(dhts, fmt.Sprintf("%s: %s, %d peers in its table", k, st.Modes[k], st.Tables[k]))
	}
	list("dht", dhts)
	row("reachability", st.Reachability)
	row("peers", fmt.Sprintf("%d connected, %d connections", st.Connected, st.Connections))
	list("listen", st.Listen)
	list("announced", st.Announced)
	list("observed", st.Observed)
	if st.MetricsAddr != "" {
		row("metrics", "http://"+st.MetricsAddr+"/metrics")
	}
	var boots []string
	for _, b := range st.Bootstrap {
		state := "not connected"
		switch {
		case b.Connected && b.InTable:
			state = "connected, in a routing table"
		case b.Connected:
			state = "connected, not in a routing table"
		case b.InTable:
			state = "in a routing table, not connected now"
		}
		boots = append(boots, fmt.Sprintf("%s  %s  %s", shortPeer(b.Peer), state, strings.Join(b.Addrs, ",")))
	}
	if len(boots) == 0 {
		boots = []string{"none configured (offline by choice, or peers seen before only)"}
	}
	list("bootstrap", boots)
	tw.Flush()
	fmt.Fprintln(w)
	if len(st.Cells) == 0 {
		fmt.Fprintln(w, "no cell announced")
		return
	}
	cells := slices.Clone(st.Cells)
	sort.Slice(cells, func(i, j int) bool { return cells[i].Name < cells[j].Name })
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tENDPOINT\tHEALTH\tANNOUNCED\tSEQ\tSTORERS\tLAST PUBLISH\tCHECKS\tERROR")
	for _, s := range cells {
		health := "ok"
		if !s.Healthy {
			health = "DOWN"
		}
		ann := "no"
		if s.Announcing {
			ann = "yes"
		}
		last := "never"
		if !s.LastPublish.IsZero() {
			last = fmt.Sprintf("%s ago", now.Sub(s.LastPublish).Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d (%d failed)\t%s\n", s.Name, s.Endpoint, health, ann, s.Seq, s.StoredAt, last,
			s.Checks, s.CheckFailures, dash(s.LastError))
	}
	tw.Flush()
}

// showStatus prints the status of the node running with home.
func showStatus(c *cobra.Command, e *env, asJSON bool, home string) error {
	if home == "" {
		home = dirs.Home()
	}
	cl, err := node.Dial(home)
	if err != nil {
		if errors.Is(err, node.ErrNoLocalNode) {
			return failErr(fmt.Errorf("no node is running with home %s (%v); start one with 'cellnode run' or 'cellnode bootstrap', or pass the --home it runs with", home, err))
		}
		return failErr(err)
	}
	st, err := cl.Status(c.Context())
	if err != nil {
		return failErr(err)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(e.stdout, st, time.Now())
	return nil
}

// printVersion prints the version.
func printVersion(e *env, asJSON bool) error {
	in := buildinfo.Read()
	if asJSON {
		return json.NewEncoder(e.stdout).Encode(in)
	}
	fmt.Fprintln(e.stdout, in)
	return nil
}
