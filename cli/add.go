package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest/project"

	"github.com/spf13/cobra"
)

func addCmd(e *env) *cobra.Command {
	var dir string
	var d project.Dep
	c := &cobra.Command{
		Use:   "add NAME --git URL [--tag T] [--max-latency-ms N] [--auto-spawn]",
		Short: "Add or update a dependency in Cell.toml, keeping its comments and layout",
		Long: `Add writes one dependency line into the [cell] table of Cell.toml:
NAME = { git = URL, tag = T, ... }. For a dependency already there, the
flags given replace its fields and the others keep their values (so
re-adding with a new --tag keeps its max_latency_ms); the line is rewritten
in place and every other line, comment and blank line is kept as it was. NAME is the
local name: the socket NAME.sock and the file NAME_instances.* use it.
Run cellnode resolve afterwards.`,
		Example: `  cellnode add exchange --git https://git.example.com/acme/exchange.git --tag v1.0.0 --max-latency-ms 50 --auto-spawn`,
		Args:    exactArgs(1, "one dependency name"),
		RunE:    func(c *cobra.Command, args []string) error { return addDep(c, args, e, dir, d) },
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", ".", "the cell's directory")
	f.StringVar(&d.Git, "git", "", "the dependency's git URL")
	f.StringVar(&d.Tag, "tag", "", "tag or branch (default: the remote's HEAD)")
	f.StringVar(&d.Cell, "cell", "", "the cell's full name ORG/NAME (default: from its manifest)")
	f.IntVar(&d.MaxLatencyMS, "max-latency-ms", 0, "use instances only up to this latency (0: any)")
	f.BoolVar(&d.AutoSpawn, "auto-spawn", false, "build and start the cell from source when no instance qualifies")
	return c
}

// mergeDep returns prev with the fields whose flags were given (changed)
// taken from flags.
func mergeDep(prev, flags project.Dep, changed func(string) bool) project.Dep {
	out := prev
	if changed("git") {
		out.Git = flags.Git
	}
	if changed("tag") {
		out.Tag = flags.Tag
	}
	if changed("cell") {
		out.Cell = flags.Cell
	}
	if changed("max-latency-ms") {
		out.MaxLatencyMS = flags.MaxLatencyMS
	}
	if changed("auto-spawn") {
		out.AutoSpawn = flags.AutoSpawn
	}
	return out
}

// addDep adds the dependency args[0] to Cell.toml in dir, or merges the flags given into it.
func addDep(c *cobra.Command, args []string, e *env, dir string, d project.Dep) error {
	path := filepath.Join(dir, project.DepsFile)
	old, err := os.ReadFile(path)
	if err != nil {
		return usageErr("%v (run cellnode init first, or pass --dir)", err)
	}
	deps, err := project.ParseDeps(old)
	if err != nil {
		return usageErr("%v", err)
	}
	prev, exists := deps.Cells[args[0]]
	d = mergeDep(prev, d, c.Flags().Changed)
	if d.Git == "" {
		return usageErr("--git is required for a new dependency")
	}
	updated, err := project.AddDep(old, args[0], d)
	if err != nil {
		return usageErr("%v", err)
	}
	fi, _ := os.Stat(path)
	if err := safefile.WriteFile(path, updated, fi.Mode().Perm()); err != nil {
		return failErr(err)
	}
	verb := "added"
	if exists {
		verb = "updated"
	}
	fmt.Fprintf(e.stdout, "%s %s in %s; run cellnode resolve\n", verb, args[0], path)
	return nil
}
