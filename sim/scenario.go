package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Design names a way of storing the set of instances of one cell name.
type Design int

const (
	// SetStore is design 1: each instance stores its signed record in a
	// set kept by the peers closest to the name's key (dht.Publish); a find
	// runs the same lookup and merges the sets (dht.Find).
	SetStore Design = 1
	// ValueRecords is design 2: each instance puts a stock kad-dht value
	// record under its own key (dht.ValueKey) and provides a CID derived
	// from the name; a find enumerates the providers and gets each value.
	ValueRecords Design = 2
)

// String returns "set-store" or "value-records".
func (d Design) String() string {
	switch d {
	case SetStore:
		return "set-store"
	case ValueRecords:
		return "value-records"
	}
	return fmt.Sprintf("design(%d)", int(d))
}

// Scenario says what network to build and what to measure on it. The zero
// value of each field means the default named in its comment. The same
// Scenario (Seed included) gives the same node identities, the same
// connections at setup, the same instance hosts and the same finders.
//
// In JSON, Latency is a Go duration string such as "20ms"; unknown fields
// are an error.
type Scenario struct {
	// Name labels the scenario in reports; it changes nothing.
	Name string `json:"name,omitempty"`
	// Nodes is the number of nodes, every one a DHT server; 0 means 50.
	Nodes int `json:"nodes,omitempty"`
	// Cells is the number of cell names measured; 0 means 4.
	Cells int `json:"cells,omitempty"`
	// InstancesPerCell is how many distinct nodes run each cell; 0 means 3.
	InstancesPerCell int `json:"instances_per_cell,omitempty"`
	// Latency is the one-way latency of every link, so a round trip (RTT)
	// takes 2×Latency; 0 means none, and then no figure is given in RTTs.
	// Setup runs without it (see New).
	Latency time.Duration `json:"latency,omitempty"`
	// BucketSize is kad-dht's k, and so the number of peers a record is
	// stored at; 0 means 20. A small k makes a small network route like a
	// big one, but below 8 setup gets slow: kad-dht repairs any routing
	// table of 10 peers or fewer by probing every connected peer again on
	// each change, and with k=4 that took 200,000 messages for 40 nodes.
	BucketSize int `json:"bucket_size,omitempty"`
	// Connect is how many earlier nodes each node dials at setup; 0 means 3.
	Connect int `json:"connect,omitempty"`
	// Finds is the number of finds measured, each from a random live node
	// for a random cell; 0 means 100.
	Finds int `json:"finds,omitempty"`
	// Seed seeds every random choice; 0 is a seed like any other.
	Seed uint64 `json:"seed,omitempty"`
	// Design is what Run measures; 0 means SetStore.
	Design Design `json:"design,omitempty"`
}

// Limits of a Scenario, checked by Validate.
const (
	MaxNodes      = 5000
	MaxBucketSize = 256
)

// WithDefaults returns s with every zero field set to its default.
func (s Scenario) WithDefaults() Scenario {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&s.Nodes, 50)
	def(&s.Cells, 4)
	def(&s.InstancesPerCell, 3)
	def(&s.BucketSize, 20)
	def(&s.Connect, 3)
	def(&s.Finds, 100)
	if s.Design == 0 {
		s.Design = SetStore
	}
	return s
}

// ErrBadScenario is returned (wrapped) by Validate, LoadScenario, New and
// Run for a Scenario with a field out of range.
var ErrBadScenario = errors.New("sim: bad scenario")

// Validate reports the first field of s (after defaults) that is out of
// range.
func (s Scenario) Validate() error {
	s = s.WithDefaults()
	switch {
	case s.Nodes < 1 || s.Nodes > MaxNodes:
		return fmt.Errorf("%w: nodes %d, want 1 to %d", ErrBadScenario, s.Nodes, MaxNodes)
	case s.Cells < 0:
		return fmt.Errorf("%w: cells %d, want at least 1", ErrBadScenario, s.Cells)
	case s.InstancesPerCell < 0 || s.InstancesPerCell > s.Nodes:
		return fmt.Errorf("%w: instances_per_cell %d, want 1 to nodes (%d)", ErrBadScenario, s.InstancesPerCell, s.Nodes)
	case s.Latency < 0:
		return fmt.Errorf("%w: negative latency %v", ErrBadScenario, s.Latency)
	case s.BucketSize < 1 || s.BucketSize > MaxBucketSize:
		return fmt.Errorf("%w: bucket_size %d, want 1 to %d", ErrBadScenario, s.BucketSize, MaxBucketSize)
	case s.Connect < 0:
		return fmt.Errorf("%w: connect %d, want at least 1", ErrBadScenario, s.Connect)
	case s.Finds < 0:
		return fmt.Errorf("%w: finds %d, want at least 1", ErrBadScenario, s.Finds)
	case s.Design != SetStore && s.Design != ValueRecords:
		return fmt.Errorf("%w: design %d, want 1 (set-store) or 2 (value-records)", ErrBadScenario, int(s.Design))
	}
	return nil
}

// RTT returns the round-trip time of a link, 2×Latency.
func (s Scenario) RTT() time.Duration { return 2 * s.Latency }

// LoadScenario reads a Scenario from the JSON file at path and validates
// it. Zero fields are left zero (their defaults apply when it is used).
func LoadScenario(path string) (Scenario, error) {
	var s Scenario
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("sim: load scenario: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("sim: load scenario %s: %w", path, err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// scenarioJSON is Scenario without its methods, so that the JSON methods
// can use the default encoding for every other field.
type scenarioJSON Scenario

// MarshalJSON writes Latency as a duration string.
func (s Scenario) MarshalJSON() ([]byte, error) {
	aux := struct {
		scenarioJSON
		Latency string `json:"latency,omitempty"`
	}{scenarioJSON: scenarioJSON(s)}
	if s.Latency != 0 {
		aux.Latency = s.Latency.String()
	}
	return json.Marshal(aux)
}

// UnmarshalJSON reads Latency as a duration string and rejects unknown
// fields.
func (s *Scenario) UnmarshalJSON(b []byte) error {
	aux := struct {
		*scenarioJSON
		Latency *string `json:"latency,omitempty"`
	}{scenarioJSON: (*scenarioJSON)(s)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the scenario")
	}
	if aux.Latency != nil {
		d, err := time.ParseDuration(*aux.Latency)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		s.Latency = d
	}
	return nil
}
