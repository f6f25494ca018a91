package simplot

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/sim"
)

// TestRead: both shapes that cellnode sim --json prints are read back;
// every other input is refused with a message that says what is wrong.
func TestRead(t *testing.T) {
	one, _ := json.Marshal(&sim.Report{Nodes: 50, RTTMS: 40, Find: sim.Latency{P50RTT: 1.2, P95RTT: 2}, FindFirst: sim.Latency{P50RTT: 0.9},
		Baseline: &sim.Report{Nodes: 50, Find: sim.Latency{P50RTT: 6}}})
	sweep, _ := json.Marshal(map[string]any{"sweep": []*sim.Report{{Nodes: 50}, {Nodes: 200}}})
	for _, tc := range []struct {
		in    string
		nodes []int
	}{
		{string(one), []int{50}},
		{string(sweep), []int{50, 200}},
	} {
		reps, err := Read(strings.NewReader(tc.in))
		if err != nil {
			t.Fatalf("%.40s: %v", tc.in, err)
		}
		if len(reps) != len(tc.nodes) {
			t.Fatalf("%.40s: %d reports", tc.in, len(reps))
		}
		for i, n := range tc.nodes {
			if reps[i].Nodes != n {
				t.Fatalf("%.40s: report %d has %d nodes, want %d", tc.in, i, reps[i].Nodes, n)
			}
		}
	}
	// The figures Write draws survive the round trip through JSON.
	if reps, _ := Read(strings.NewReader(string(one))); reps[0].RTTMS != 40 || reps[0].Find.P50RTT != 1.2 || reps[0].Find.P95RTT != 2 ||
		reps[0].FindFirst.P50RTT != 0.9 || reps[0].Baseline == nil || reps[0].Baseline.Find.P50RTT != 6 {
		t.Fatalf("figures lost: %+v", reps[0])
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty input"},
		{"  \n", "empty input"},
		{"nodes 50", "not a JSON object"},
		{"[1,2]", "not a JSON object"},
		{`{"name": "acme/x"}`, `neither a report`},
		{`{"sweep": []}`, "holds no report"},
		{`{"sweep": [{"nodes": 0}]}`, "sweep report 0 has no node count"},
		{`{"sweep": 3}`, "sweep:"},
		{`{"nodes": "many"}`, "report:"},
		{`{"nodes": 0}`, "no node count"},
	} {
		_, err := Read(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.want)
		}
	}
}
