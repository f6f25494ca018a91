package main

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cellnode/cellnode"

// layers says which packages of the module a package must not depend on,
// directly or through other packages. Paths are relative to the module.
//
//   - dht, manifest and bootstrap are libraries: they know nothing of the
//     node that runs them, the command line or the simulator.
//   - dht/record is the byte format alone: no DHT, no manifest.
//   - manifest's three packages are side by side over manifest: gitobj
//     (git objects) and project (Cell.toml, Cell.lock) do not use each
//     other, and none of them uses the DHT.
//   - node runs a cellnode; the command line and the simulator use it, not
//     the other way round.
//   - cli is the command line; it may use sim (a `sim` command).
//   - sim drives nodes and DHTs; it is not a command line.
//   - cmd/cellnode does not link sim/simplot: its plotting libraries' package
//     inits would slow every cellnode process's start (cmd/cellnode-plot
//     draws the simulator's reports instead).
//
// No package of the module, listed here or not (new ones included), may
// depend on a command (cmd/cellnode or any other package under cmd/).
var layers = map[string][]string{
	"dht":          {"cli", "node", "sim"},
	"dht/record":   {"dht", "manifest", "bootstrap"},
	"manifest":     {"cli", "node", "sim", "dht", "manifest/gitobj", "manifest/project"},
	"bootstrap":    {"cli", "node", "sim"},
	"node":         {"cli", "sim"},
	"sim":          {"cli"},
	"cmd/cellnode": {"sim/simplot"},
}

// mustExist are packages whose absence means the test looks at the wrong
// tree (it would pass vacuously).
var mustExist = []string{"dht", "dht/record", "manifest", "manifest/gitobj", "manifest/project", "bootstrap", "node", "cli", "cmd/cellnode"}

// TestDeps checks the layering of the module's packages on the output of
// go list: each package's transitive dependencies (not those of its tests).
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH")
	}
	// -e: a package that does not build is still listed with what go list
	// could read; build errors are for the build and other tests to report.
	cmd := exec.Command(goBin, "list", "-e", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}

	deps := map[string][]string{} // module-relative path -> its module deps
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, ok := rel(fields[0])
		if !ok {
			continue
		}
		deps[pkg] = []string{}
		for _, d := range fields[1:] {
			if r, ok := rel(d); ok {
				deps[pkg] = append(deps[pkg], r)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, p := range mustExist {
		if _, ok := deps[p]; !ok {
			t.Fatalf("go list did not report package %s; got %v", p, slices.Sorted(maps.Keys(deps)))
		}
	}

	for _, v := range violations(deps) {
		t.Error(v)
	}
}

// violations returns one message for each dependency in deps (module-relative
// package path -> module-relative dependencies) that breaks the layering.
// The rules of a package apply to its subpackages too.
func violations(deps map[string][]string) []string {
	var out []string
	for _, pkg := range slices.Sorted(maps.Keys(deps)) {
		for _, d := range deps[pkg] {
			if under(d, "cmd") {
				out = append(out, fmt.Sprintf("%s depends on %s: nothing may import a command", pkg, d))
			}
			for layer, banned := range layers {
				if !under(pkg, layer) {
					continue
				}
				for _, b := range banned {
					if under(d, b) {
						out = append(out, fmt.Sprintf("%s depends on %s, which %s must not", pkg, d, layer))
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestDepsRules checks that violations catches what it should.
func TestDepsRules(t *testing.T) {
	deps := map[string][]string{
		"dht":          {"manifest"},
		"dht/internal": {"node"}, // a subpackage of dht
		"node":         {"dht", "bootstrap", "manifest"},
		"cli":          {"node", "sim", "dht"},
		"sim":          {"node", "dht", "cli"},
		"manifest":     {"cmd/cellnode"},
		"tools":        {"cmd/other"}, // not a layer: only the command rule
	}
	got := violations(deps)
	want := []string{
		"dht/internal depends on node, which dht must not",
		"manifest depends on cmd/cellnode: nothing may import a command",
		"sim depends on cli, which sim must not",
		"tools depends on cmd/other: nothing may import a command",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n got %q\nwant %q", got, want)
	}
}

// under reports whether pkg is dir or a package below it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// rel returns the module-relative path of a package of the module.
func rel(importPath string) (string, bool) {
	if importPath == module {
		return ".", true
	}
	r, ok := strings.CutPrefix(importPath, module+"/")
	return r, ok
}
