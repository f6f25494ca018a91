package simplot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cellnode/cellnode/sim"
)

// maxInput bounds what Read takes: a sweep of a few dozen sizes is well
// under a megabyte.
const maxInput = 64 << 20

// Read decodes what `cellnode sim --json` prints: one report, or a sweep
// (an object whose "sweep" holds the reports), keeping the figures that
// Write draws. Input that is empty, not JSON, not one of those two shapes,
// or a sweep with no report, is an error saying which.
func Read(r io.Reader) ([]*sim.Report, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("simplot: read: %w", err)
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("simplot: input over %d MiB: not a report of cellnode sim --json", maxInput>>20)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("simplot: empty input: want the output of cellnode sim --json")
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(b, &shape); err != nil {
		return nil, fmt.Errorf("simplot: not a JSON object (the output of cellnode sim --json): %w", err)
	}
	if raw, ok := shape["sweep"]; ok {
		var reps []*reportJSON
		if err := json.Unmarshal(raw, &reps); err != nil {
			return nil, fmt.Errorf("simplot: sweep: %w", err)
		}
		if len(reps) == 0 {
			return nil, errors.New("simplot: the sweep holds no report")
		}
		out := make([]*sim.Report, len(reps))
		for i, r := range reps {
			if r == nil || r.Nodes <= 0 {
				return nil, fmt.Errorf("simplot: sweep report %d has no node count", i)
			}
			out[i] = r.report()
		}
		return out, nil
	}
	if _, ok := shape["nodes"]; !ok {
		return nil, errors.New(`simplot: neither a report (no "nodes") nor a sweep (no "sweep"): want the output of cellnode sim --json`)
	}
	var rep reportJSON
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, fmt.Errorf("simplot: report: %w", err)
	}
	if rep.Nodes <= 0 {
		return nil, errors.New("simplot: the report has no node count")
	}
	return []*sim.Report{rep.report()}, nil
}

// reportJSON is the part of a report's JSON (sim.Report.MarshalJSON) that
// Write draws.
type reportJSON struct {
	Nodes int     `json:"nodes"`
	RTTMS float64 `json:"rtt_ms"`
	Find  struct {
		sim.Latency
		First sim.Latency `json:"first"`
	} `json:"find"`
	Baseline *reportJSON `json:"baseline"`
}

func (j *reportJSON) report() *sim.Report {
	r := &sim.Report{Nodes: j.Nodes, RTTMS: j.RTTMS, Find: j.Find.Latency, FindFirst: j.Find.First}
	if j.Baseline != nil {
		r.Baseline = j.Baseline.report()
	}
	return r
}
