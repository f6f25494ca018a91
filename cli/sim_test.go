package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// simArgs is a small, fast simulation: 20 nodes, 2 ms links.
var simArgs = []string{"sim", "--nodes", "20", "--cells", "2", "--instances", "2", "--finds", "8", "--latency", "2ms", "--bucket-size", "8"}

// lookup follows a dotted path ("find.p50_rtt") in a decoded JSON object.
func lookup(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = o[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func runSimJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	code, stdout, stderr := run(t, append(append([]string{}, simArgs...), append(args, "--json")...)...)
	if code != ExitOK {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "setting up 20 nodes") {
		t.Errorf("no progress on stderr: %q", stderr)
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value on stdout:\n%s", stdout)
	}
	return out
}

func TestSimJSON(t *testing.T) {
	out := runSimJSON(t, "--seed", "3")
	for _, k := range []string{
		"nodes", "find.p50_rtt", "find.p95_rtt", "find.first_p50_rtt", "find.success_rate",
		"announce.messages_per_republish", "staleness.max_ms", "memory.bytes_per_node",
		"memory.goroutines_per_node", "setup_seconds", "find.p50_ms", "find.messages",
		"announce.bytes_per_instance_per_minute", "staleness.bound_ms", "schedule",
	} {
		if _, ok := lookup(out, k); !ok {
			t.Errorf("no %s in the report", k)
		}
	}
	num := func(k string) float64 {
		v, _ := lookup(out, k)
		f, _ := v.(float64)
		return f
	}
	if num("nodes") != 20 {
		t.Errorf("nodes %v", num("nodes"))
	}
	if num("find.success_rate") != 1 {
		t.Errorf("success rate %v: %v", num("find.success_rate"), out["find"])
	}
	if num("find.p50_rtt") < 0.5 || num("find.first_p50_rtt") <= 0 || num("find.first_p50_rtt") > num("find.p95_rtt") {
		t.Errorf("find p50 %v RTT, first %v RTT, p95 %v RTT", num("find.p50_rtt"), num("find.first_p50_rtt"), num("find.p95_rtt"))
	}
	if st := num("staleness.max_ms"); st <= 0 || st > num("staleness.bound_ms") {
		t.Errorf("staleness %v ms, bound %v ms", st, num("staleness.bound_ms"))
	}
	if num("memory.bytes_per_node") <= 0 || num("memory.goroutines_per_node") <= 0 || num("announce.messages_per_republish") <= 0 {
		t.Errorf("memory %v, announce %v", out["memory"], out["announce"])
	}
}

// TestSimSeed: the same seed and scenario make the same choices; another
// seed makes others.
func TestSimSeed(t *testing.T) {
	a := runSimJSON(t, "--seed", "5")
	b := runSimJSON(t, "--seed", "5")
	c := runSimJSON(t, "--seed", "6")
	if a["schedule"] != b["schedule"] {
		t.Errorf("same seed, schedules %v and %v", a["schedule"], b["schedule"])
	}
	if a["schedule"] == c["schedule"] {
		t.Errorf("seeds 5 and 6 made the same schedule %v", a["schedule"])
	}
}

func TestSimBaseline(t *testing.T) {
	out := runSimJSON(t, "--baseline")
	if d, _ := lookup(out, "baseline.design"); d != "value-records" {
		t.Fatalf("baseline design %v", d)
	}
	for _, k := range []string{"vs_baseline.find_p50", "vs_baseline.messages_per_find", "baseline.find.p50_rtt"} {
		if v, ok := lookup(out, k); !ok || v.(float64) <= 0 {
			t.Errorf("%s = %v", k, v)
		}
	}
}

func TestSimText(t *testing.T) {
	code, stdout, stderr := run(t, simArgs...)
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"set-store: 20 nodes", "find ", "first", "success    100.0%", "staleness"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "setting up") {
		t.Errorf("progress on stdout:\n%s", stdout)
	}
}

func TestSimScenarioFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "s.json")
	sc := `{"name": "mine", "nodes": 12, "cells": 1, "instances_per_cell": 2, "latency": "1ms",
		"bucket_size": 8, "finds": 4, "churn": {"leave": 0.2, "join": 0.2}, "kills": -1, "seed": 9}`
	if err := os.WriteFile(file, []byte(sc), 0o600); err != nil {
		t.Fatal(err)
	}
	// Flags override the file: 16 nodes, not 12.
	code, stdout, stderr := run(t, "sim", "--scenario", file, "--nodes", "16", "--json")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		t.Fatal(err)
	}
	if n, _ := lookup(out, "nodes"); n != 16.0 {
		t.Errorf("nodes %v, want the flag's 16", n)
	}
	if n, _ := lookup(out, "scenario.name"); n != "mine" {
		t.Errorf("scenario name %v", n)
	}
	if n, _ := lookup(out, "churn.left"); n.(float64) < 1 {
		t.Errorf("churn %v", out["churn"])
	}
	if n, _ := lookup(out, "staleness.killed"); n != 0.0 {
		t.Errorf("staleness phase ran: %v", out["staleness"])
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"missing file", []string{"sim", "--scenario", filepath.Join(dir, "nope.json")}},
		{"bad field", []string{"sim", "--churn", "2"}},
		{"argument", []string{"sim", "extra"}},
		{"plot", []string{"sim", "--plot", filepath.Join(dir, "latency.png")}}, // refused before any run; cellnode-plot draws
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, stderr := run(t, tc.args...); code != ExitUsage {
				t.Fatalf("exit %d, want %d: %s", code, ExitUsage, stderr)
			} else if tc.name == "plot" && !strings.Contains(stderr, "cellnode-plot") {
				t.Fatalf("the error does not name cellnode-plot: %s", stderr)
			}
		})
	}
}
