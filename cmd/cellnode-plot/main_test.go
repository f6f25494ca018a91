package main

import (
	"encoding/json"
	"errors"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/sim"
)

// TestRun: a sweep file and a report on standard input make one PNG; a
// missing -o, a missing file and a bad report are errors that leave no
// output file behind.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	sweep, _ := json.Marshal(map[string]any{"sweep": []*sim.Report{
		{Nodes: 50, RTTMS: 40, Find: sim.Latency{P50RTT: 1.1, P95RTT: 1.5}},
		{Nodes: 200, RTTMS: 40, Find: sim.Latency{P50RTT: 1.3, P95RTT: 1.9}},
	}})
	in := filepath.Join(dir, "sweep.json")
	if err := os.WriteFile(in, sweep, 0o600); err != nil {
		t.Fatal(err)
	}
	one, _ := json.Marshal(&sim.Report{Nodes: 1000, RTTMS: 40, Find: sim.Latency{P50RTT: 1.6, P95RTT: 2.2}})
	out := filepath.Join(dir, "latency.png")
	if err := run([]string{"-o", out, in, "-"}, strings.NewReader(string(one)), io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("not a PNG: %v", err)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"sweep": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{in}, "-o FILE.png is required", true},
		{[]string{"-x"}, "not defined", true},
		{[]string{"-o", filepath.Join(dir, "a.png"), filepath.Join(dir, "none.json")}, "no such file", false},
		{[]string{"-o", filepath.Join(dir, "b.png"), bad}, "bad.json: simplot: the sweep holds no report", false},
		{[]string{"-o", filepath.Join(dir, "c.png")}, "standard input: simplot: empty input", false},
	} {
		err := run(tc.args, strings.NewReader(""), io.Discard)
		var u usage
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &u) != tc.usage {
			t.Errorf("%q: error %v (usage %t), want one saying %q (usage %t)", tc.args, err, errors.As(err, &u), tc.want, tc.usage)
		}
	}
	for _, name := range []string{"a.png", "b.png", "c.png"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after a failed run", name)
		}
	}
}
