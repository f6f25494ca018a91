package sim

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestLoadScenario(t *testing.T) {
	for _, tc := range []struct {
		file string
		want Scenario
	}{
		{"tiny.json", Scenario{Name: "tiny", Nodes: 8, Cells: 2, InstancesPerCell: 2, BucketSize: 8, Connect: 2, Finds: 5, Seed: 7}},
		{"small.json", Scenario{Name: "small", Nodes: 30, Cells: 3, InstancesPerCell: 3, Latency: 2 * time.Millisecond, BucketSize: 8, Finds: 20, Seed: 1}},
		{"bench-100.json", Scenario{Name: "bench-100", Nodes: 100, Cells: 10, InstancesPerCell: 3, Latency: 20 * time.Millisecond, BucketSize: 20, Connect: 3, Finds: 100, Seed: 1}},
		{"bench-1000.json", Scenario{Name: "bench-1000", Nodes: 1000, Cells: 10, InstancesPerCell: 3, Latency: 20 * time.Millisecond, BucketSize: 20, Finds: 100, Seed: 1}},
		{"bench-200.json", Scenario{Name: "bench-200", Nodes: 200, Cells: 10, InstancesPerCell: 3, Latency: 20 * time.Millisecond, BucketSize: 20, Connect: 3, Finds: 100, Seed: 1}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := LoadScenario(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestLoadScenarioRejects(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		bad        bool // wraps ErrBadScenario
	}{
		{"unknown field", `{"nodez": 3}`, false},
		{"latency as number", `{"latency": 20}`, false},
		{"latency not a duration", `{"latency": "fast"}`, false},
		{"trailing data", `{"nodes": 3} {}`, false},
		{"too many nodes", `{"nodes": 20001}`, true},
		{"negative latency", `{"latency": "-1ms"}`, true},
		{"negative reuse_for", `{"reuse_for": "-1s"}`, true},
		{"more instances than nodes", `{"nodes": 2, "instances_per_cell": 3}`, true},
		{"unknown design", `{"design": 3}`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.json")
			if err := os.WriteFile(path, []byte(tc.json), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadScenario(path)
			if err == nil {
				t.Fatal("accepted")
			}
			if errors.Is(err, ErrBadScenario) != tc.bad {
				t.Fatalf("error %q: wraps ErrBadScenario = %v, want %v", err, !tc.bad, tc.bad)
			}
		})
	}
	if _, err := LoadScenario(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestScenarioDefaults(t *testing.T) {
	got := Scenario{}.WithDefaults()
	want := Scenario{Nodes: 50, Cells: 4, InstancesPerCell: 3, BucketSize: 20, Connect: 3, Finds: 100,
		FindEvery: time.Second, RepeatEvery: 4, Lifetime: time.Minute, Republish: 20 * time.Second, Kills: 1, Design: SetStore}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
	if err := (Scenario{}).Validate(); err != nil {
		t.Fatalf("zero scenario: %v", err)
	}
	set := Scenario{Nodes: 7, Latency: time.Millisecond, Design: ValueRecords}
	if got := set.WithDefaults(); got.Nodes != 7 || got.Latency != time.Millisecond || got.Design != ValueRecords {
		t.Fatalf("defaults overrode set fields: %+v", got)
	}
}

func TestScenarioJSONRoundTrip(t *testing.T) {
	in := Scenario{Name: "x", Nodes: 9, Latency: 1500 * time.Microsecond, Seed: 1 << 60, Design: ValueRecords}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"name":"x","nodes":9,"latency":"1.5ms","seed":1152921504606846976,"design":2}`
	if string(b) != want {
		t.Fatalf("marshal:\n got %s\nwant %s", b, want)
	}
	var out Scenario
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
}
