package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"text/tabwriter"
	"time"

	"github.com/cellnode/cellnode/sim"
	"github.com/spf13/cobra"
)

// simDefaults are the figures `cellnode sim` uses where neither a flag nor
// the scenario file says otherwise: a run of well under a minute.
var simDefaults = sim.Scenario{
	Name: "default", Nodes: 100, Cells: 4, InstancesPerCell: 3,
	Latency: 20 * time.Millisecond, Finds: 50, Seed: 1,
}

func simCmd(e *env) *cobra.Command {
	var (
		scenarioFile string
		asJSON       bool
		baseline     bool
		timeout      time.Duration
		sweep        []int
		plotFile     string
		f            simFlags
	)
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run a simulated network of real nodes in this process and measure it",
		Long: `Sim builds a network of real cellnode nodes (real kad-dht, real signed records,
real validation) on an in-process network with per-link latency, announces
instances, runs finds under the scenario's churn and partition, kills
instance hosts to see how long they stay findable, and reports the figures:
find latency in milliseconds and in round trips (RTT), time to the first
instance, success rate, messages and bytes per find and per announce,
staleness, memory and goroutines per node, setup time.

A scenario file (JSON, see docs/sim.md) gives every setting; flags given
on the command line override it. The same seed and scenario build the same
topology and run the same schedule.

--baseline also measures stock kad-dht value records (a PutValue per
instance, providers on the name, a GetValue per instance found) on the same
network, find by find, and reports cellnode's figures as ratios to it.

--sweep runs the scenario at each of the given sizes, one network after the
other, and prints one line per size (with --json, one object whose "sweep"
holds the reports). cellnode-plot (go run ./cmd/cellnode-plot) draws the
--json output as a PNG of find latency in RTTs against the network size.

Progress goes to stderr; the report to stdout (one JSON object with --json).`,
		Example: `  cellnode sim
  cellnode sim --nodes 1000 --latency 20ms --json
  cellnode sim --scenario sim/testdata/churn.json --baseline
  cellnode sim --nodes 200 --churn 0.3 --seed 7
  cellnode sim --sweep 50,100,200,500,1000 --baseline --json > sweep.json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return runSim(c, e, scenarioFile, asJSON, baseline, timeout, sweep, plotFile, f)
		},
	}
	fs := c.Flags()
	fs.StringVar(&scenarioFile, "scenario", "", "scenario file (JSON); flags override its fields")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	fs.BoolVar(&baseline, "baseline", false, "also measure stock kad-dht value records and report ratios to them")
	fs.DurationVar(&timeout, "timeout", 0, "give up after this long (0: no limit)")
	fs.IntSliceVar(&sweep, "sweep", nil, "run at each of these sizes (comma-separated node counts) and print one line per size")
	fs.StringVar(&plotFile, "plot", "", "gone: see cellnode-plot")
	_ = fs.MarkHidden("plot")
	f.add(c)
	return c
}

// simFlags are the scenario fields settable on the command line.
type simFlags struct {
	nodes, cells, instances, finds, bucket int
	latency, skew                          time.Duration
	churn                                  float64
	seed                                   uint64
}

func (f *simFlags) add(c *cobra.Command) {
	fs := c.Flags()
	fs.IntVar(&f.nodes, "nodes", simDefaults.Nodes, "nodes in the network")
	fs.IntVar(&f.cells, "cells", simDefaults.Cells, "cell names announced")
	fs.IntVar(&f.instances, "instances", simDefaults.InstancesPerCell, "instances of each cell, on distinct nodes")
	fs.IntVar(&f.finds, "finds", simDefaults.Finds, "finds measured")
	fs.IntVar(&f.bucket, "bucket-size", 20, "kad-dht bucket size k (records are stored at k peers)")
	fs.DurationVar(&f.latency, "latency", simDefaults.Latency, "one-way latency of every link (RTT is twice this)")
	fs.DurationVar(&f.skew, "skew", 0, "largest clock error of a node (each node is off by up to ± this)")
	fs.Float64Var(&f.churn, "churn", 0, "fraction of nodes that leave during the finds, and as many join")
	fs.Uint64Var(&f.seed, "seed", simDefaults.Seed, "seed of every random choice")
}

// apply sets the fields of sc whose flag was given.
func (f *simFlags) apply(c *cobra.Command, sc *sim.Scenario) {
	set := c.Flags().Changed
	if set("nodes") {
		sc.Nodes = f.nodes
	}
	if set("cells") {
		sc.Cells = f.cells
	}
	if set("instances") {
		sc.InstancesPerCell = f.instances
	}
	if set("finds") {
		sc.Finds = f.finds
	}
	if set("bucket-size") {
		sc.BucketSize = f.bucket
	}
	if set("latency") {
		sc.Latency, sc.Regions = f.latency, nil
	}
	if set("skew") {
		sc.Skew = f.skew
	}
	if set("churn") {
		sc.Churn.Leave, sc.Churn.Join = f.churn, f.churn
	}
	if set("seed") {
		sc.Seed = f.seed
	}
}

func writeJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeSweep prints one line per size.
func writeSweep(e *env, reps []*sim.Report) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tsetup s\tfind p50 RTT\tp95 RTT\tfirst p50 RTT\trepeat p50 RTT\tsuccess %\tmsgs/find\tmsgs/announce\tMiB/node\tgoroutines/node\tstaleness s\tbaseline p50 RTT\t")
	for _, r := range reps {
		base := "-"
		if r.Baseline != nil {
			base = fmt.Sprintf("%.2f", r.Baseline.Find.P50RTT)
		}
		fmt.Fprintf(tw, "%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t%.0f\t%.1f\t%s\t\n",
			r.Nodes, r.SetupSeconds, r.Find.P50RTT, r.Find.P95RTT, r.FindFirst.P50RTT, r.FindRepeat.P50RTT,
			100*r.Success, r.MessagesPerFind, r.MessagesPerAnnounce, r.Memory.BytesPerNode()/(1<<20),
			r.Memory.Goroutines, r.Staleness.MaxMS/1000, base)
	}
	return tw.Flush()
}

// runSim runs a simulation and prints its report.
func runSim(c *cobra.Command, e *env, scenarioFile string, asJSON bool, baseline bool, timeout time.Duration, sweep []int, plotFile string, f simFlags) error {
	if plotFile != "" {
		// Before any run: a sweep can take minutes.
		return usageErr("--plot is no longer in cellnode (its plotting libraries slowed every cellnode process's start): print the reports with --json and draw them with cellnode-plot, for example: cellnode sim ... --json > r.json && go run ./cmd/cellnode-plot -o %s r.json", plotFile)
	}
	sc := simDefaults
	if scenarioFile != "" {
		var err error
		if sc, err = sim.LoadScenario(scenarioFile); err != nil {
			return usageErr("%v", err)
		}
	}
	f.apply(c, &sc)
	if baseline {
		sc.Baseline = true
	}
	if err := sc.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if os.Getenv("GOGC") == "" {
		// Many nodes in one process make garbage fast; collecting
		// less often halves the setup time for 24 GiB of room.
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	ctx := c.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	progress := func(s string) {
		fmt.Fprintf(e.stderr, "sim %5.1fs: %s\n", time.Since(start).Seconds(), s)
	}
	if len(sweep) == 0 {
		rep, err := sim.RunWith(ctx, sc, progress)
		if err != nil {
			return failErr(err)
		}
		progress("done")
		if asJSON {
			return writeJSON(e, rep)
		}
		return rep.WriteText(e.stdout)
	}
	var reps []*sim.Report
	for _, n := range sweep {
		sc := sc
		sc.Nodes = n
		if err := sc.Validate(); err != nil {
			return usageErr("--sweep %d: %v", n, err)
		}
		rep, err := sim.RunWith(ctx, sc, func(s string) { progress(fmt.Sprintf("%d nodes: %s", n, s)) })
		if err != nil {
			return failErr(err)
		}
		reps = append(reps, rep)
	}
	progress("done")
	if asJSON {
		return writeJSON(e, map[string]any{"sweep": reps})
	}
	return writeSweep(e, reps)
}
