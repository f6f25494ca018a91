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
// Scenario (Seed included) gives the same node identities, regions and
// clock skews, the same connections at setup, the same instance hosts, the
// same finders and the same schedule of churn and partitions.
//
// Times in the schedule (FindEvery, Churn, Partition, Lifetime) are on the
// network's simulated clock (see Clock), which Measure moves forward
// between finds: a find phase of 100 finds covers 100 s of record life
// whatever the wall time it takes.
//
// In JSON, durations are Go duration strings such as "20ms"; unknown fields
// are an error. See docs/sim.md.
type Scenario struct {
	// Name labels the scenario in reports; it changes nothing.
	Name string `json:"name,omitempty"`
	// Nodes is the number of nodes at setup, every one a DHT server; 0
	// means 50.
	Nodes int `json:"nodes,omitempty"`
	// Cells is the number of cell names measured; 0 means 4.
	Cells int `json:"cells,omitempty"`
	// InstancesPerCell is how many distinct nodes run each cell; 0 means 3.
	InstancesPerCell int `json:"instances_per_cell,omitempty"`
	// Latency is the one-way latency of every link, so a round trip (RTT)
	// takes 2×Latency; 0 means none (and then no figure is given in RTTs),
	// unless Regions is set, which replaces it. Setup runs without it
	// (see New).
	Latency time.Duration `json:"latency,omitempty"`
	// Regions, when not nil, places every node in a region and gives each
	// link the one-way latency between the regions of its ends; the RTT
	// unit of the reports is then twice the median one-way latency over all
	// pairs of nodes (see Network.RTT).
	Regions *Regions `json:"regions,omitempty"`
	// BucketSize is kad-dht's k, and so the number of peers a record is
	// stored at; 0 means 20. A small k makes a small network route like a
	// big one, but below 8 setup gets slow: kad-dht repairs any routing
	// table of 10 peers or fewer by probing every connected peer again on
	// each change, and with k=4 that took 200,000 messages for 40 nodes.
	BucketSize int `json:"bucket_size,omitempty"`
	// Setup is how New fills the routing tables: SetupTables (the
	// default, "") or SetupJoin.
	Setup string `json:"setup,omitempty"`
	// Connect is how many earlier nodes each node dials at a SetupJoin
	// setup, and a joining node at churn; 0 means 3.
	Connect int `json:"connect,omitempty"`
	// Bootstrap, when not 0, makes the first Bootstrap nodes the
	// network's bootstrap nodes: a node joining at churn dials Connect of
	// them (instead of random live nodes), and the report's load gives
	// their figures apart (Report.Load.Bootstrap).
	Bootstrap int `json:"bootstrap,omitempty"`
	// AlwaysLookup makes every publish look up the closest peers afresh,
	// instead of reusing the storers that took the previous one
	// (dht.Config.AlwaysLookup): to compare republishing with and
	// without reuse.
	AlwaysLookup bool `json:"always_lookup,omitempty"`
	// ReuseFor is how long a publish reuses its storers before checking
	// them (dht.Config.ReuseFor); 0 means the node's default, 2 min. A
	// scenario whose announcers republish faster than every 20 s can
	// scale it to the same 6 republish intervals.
	ReuseFor time.Duration `json:"reuse_for,omitempty"`
	// Finds is the number of finds measured, each from a random live node
	// for a random cell; 0 means 100.
	Finds int `json:"finds,omitempty"`
	// FindEvery is the simulated time between two finds; 0 means 1 s.
	FindEvery time.Duration `json:"find_every,omitempty"`
	// RepeatEvery: every RepeatEvery-th find is run a second time at once
	// from the same node, to measure a repeated find; 0 means 4, and a
	// negative value means never.
	RepeatEvery int `json:"repeat_every,omitempty"`
	// Lifetime is the life of the records Measure publishes; 0 means 60 s
	// (record.MaxLifetime, the most allowed).
	Lifetime time.Duration `json:"lifetime,omitempty"`
	// Republish is how often Measure publishes a record again; 0 means
	// 20 s, as the announcer does. Bytes per instance per minute are
	// computed from it.
	Republish time.Duration `json:"republish,omitempty"`
	// Skew is the largest clock error of a node: each node's clock is off
	// by a value drawn uniformly in [-Skew, +Skew]; 0 means none. Records
	// tolerate record.MaxSkew (5 s).
	Skew time.Duration `json:"skew,omitempty"`
	// Churn makes nodes leave and join during the find phase; the zero
	// value means none.
	Churn Churn `json:"churn,omitzero"`
	// Partition, when not nil, splits the network during the find phase.
	Partition *Partition `json:"partition,omitempty"`
	// Kills is how many instance hosts the staleness phase kills (without
	// withdrawal) before watching how long their instances are still
	// found; 0 means 1, a negative value skips the phase.
	Kills int `json:"kills,omitempty"`
	// Adversaries are nodes that do not follow the protocol. New sets them
	// aside (see Network.Adversaries); Measure never picks them as
	// instance hosts or finders. What each kind does is up to the code
	// that runs it.
	Adversaries []AdversarySpec `json:"adversaries,omitempty"`
	// Seed seeds every random choice; 0 is a seed like any other.
	Seed uint64 `json:"seed,omitempty"`
	// Design is what Run measures; 0 means SetStore.
	Design Design `json:"design,omitempty"`
	// Baseline makes Run measure ValueRecords beside Design on the same
	// network, find by find (see Measure).
	Baseline bool `json:"baseline,omitempty"`
	// Hot, when not nil, replaces the find and staleness phases with the
	// finds of one hot name (see HotName); set-store only.
	Hot *HotName `json:"hot,omitempty"`
}

// Setups: how New fills the routing tables.
const (
	// SetupTables gives every node the routing table of a converged
	// network, straight away: for each bucket, up to k random nodes of that
	// bucket (kad-dht's periodic refresh aims at the same), then connects
	// it to each of them. It is fast (15 s for 1000 nodes on 2 cores) and
	// leaves no stream open, so the memory it reports is that of idle
	// nodes.
	SetupTables = "tables"
	// SetupJoin joins nodes the way kad-dht does: one at a time, each
	// dials Connect random earlier nodes; then every routing table is
	// refreshed (a lookup per bucket), a few at a time. It is slow (about
	// a minute for 500 nodes) and leaves the streams of those lookups
	// open.
	SetupJoin = "join"
)

// Regions is a latency model: every node lives in one region, drawn from
// the scenario's seed with the given weights, and a link's one-way latency
// is OneWayMS[a][b] for nodes in regions a and b.
type Regions struct {
	// Names are the regions, e.g. "eu", "us-east", "ap".
	Names []string `json:"names"`
	// Weights are the shares of nodes in each region; nil means equal
	// shares. They need not sum to 1.
	Weights []float64 `json:"weights,omitempty"`
	// OneWayMS is the one-way latency between regions, in milliseconds: a
	// square, symmetric matrix with one row per name. The diagonal is the
	// latency inside a region.
	OneWayMS [][]float64 `json:"one_way_ms"`
}

// Churn says how many nodes leave and join during the find phase. A node
// that leaves is killed (see Network.Kill): it says nothing to anybody. A
// node that joins is a new node (a new identity), which dials Connect live
// nodes and refreshes its routing table in the background. Instance hosts
// and adversaries never leave: the staleness phase measures dead
// instances.
type Churn struct {
	// Leave is the fraction of the scenario's nodes that leave, 0 to 0.9.
	Leave float64 `json:"leave,omitempty"`
	// Join is the number of nodes that join, as a fraction of the
	// scenario's nodes, 0 to 1.
	Join float64 `json:"join,omitempty"`
	// PerMinute is how many nodes leave (and as many join, in proportion)
	// per minute of simulated time; 0 spreads the churn evenly over the
	// find phase. Churn left when the find phase ends does not happen.
	PerMinute float64 `json:"per_minute,omitempty"`
}

// Partition splits the network in two during the find phase: every link
// between the two sides is cut, and every connection closed, at At; links
// are allowed again at Heal. Nothing else is done at Heal: nodes find each
// other again through their routing tables and lookups.
type Partition struct {
	// At is when the split happens, in simulated time since the find phase
	// began.
	At time.Duration `json:"at"`
	// Heal is when it ends; 0 means never.
	Heal time.Duration `json:"heal,omitempty"`
	// Fraction is the share of nodes on the smaller side, drawn from the
	// seed; 0 means 0.5.
	Fraction float64 `json:"fraction,omitempty"`
}

// AdversarySpec reserves Count nodes for adversaries of one Kind. The
// simulator only sets the nodes aside; Params are for the code that makes
// them misbehave.
type AdversarySpec struct {
	Kind   string         `json:"kind"`
	Count  int            `json:"count"`
	Params map[string]any `json:"params,omitempty"`
}

// Limits of a Scenario, checked by Validate.
const (
	MaxNodes      = 20000
	MaxBucketSize = 256
)

// Defaults of a Scenario.
const (
	DefaultNodes     = 50
	DefaultFindEvery = time.Second
	DefaultRepublish = 20 * time.Second
)

// WithDefaults returns s with every zero field set to its default.
func (s Scenario) WithDefaults() Scenario {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&s.Nodes, DefaultNodes)
	def(&s.Cells, 4)
	def(&s.InstancesPerCell, 3)
	def(&s.BucketSize, 20)
	def(&s.Connect, 3)
	def(&s.Finds, 100)
	def(&s.RepeatEvery, 4)
	def(&s.Kills, 1)
	if s.FindEvery == 0 {
		s.FindEvery = DefaultFindEvery
	}
	if s.Lifetime == 0 {
		s.Lifetime = 60 * time.Second
	}
	if s.Republish == 0 {
		s.Republish = DefaultRepublish
	}
	if s.Design == 0 {
		s.Design = SetStore
	}
	if s.Partition != nil && s.Partition.Fraction == 0 {
		p := *s.Partition
		p.Fraction = 0.5
		s.Partition = &p
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
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadScenario}, a...)...)
	}
	adversaries := 0
	for _, a := range s.Adversaries {
		if a.Kind == "" || a.Count < 1 {
			return bad("adversary %+v: want a kind and a count of at least 1", a)
		}
		adversaries += a.Count
	}
	switch {
	case s.Nodes < 1 || s.Nodes > MaxNodes:
		return bad("nodes %d, want 1 to %d", s.Nodes, MaxNodes)
	case s.Cells < 0:
		return bad("cells %d, want at least 1", s.Cells)
	case s.InstancesPerCell < 0 || s.InstancesPerCell > s.Nodes-adversaries:
		return bad("instances_per_cell %d, want 1 to honest nodes (%d)", s.InstancesPerCell, s.Nodes-adversaries)
	case s.Latency < 0:
		return bad("negative latency %v", s.Latency)
	case s.ReuseFor < 0:
		return bad("negative reuse_for %v", s.ReuseFor)
	case s.BucketSize < 1 || s.BucketSize > MaxBucketSize:
		return bad("bucket_size %d, want 1 to %d", s.BucketSize, MaxBucketSize)
	case s.Connect < 0:
		return bad("connect %d, want at least 1", s.Connect)
	case s.Bootstrap < 0 || s.Bootstrap > s.Nodes:
		return bad("bootstrap %d, want 0 to nodes (%d)", s.Bootstrap, s.Nodes)
	case s.Finds < 0:
		return bad("finds %d, want at least 1", s.Finds)
	case s.FindEvery < 0:
		return bad("negative find_every %v", s.FindEvery)
	case s.Lifetime < 0 || s.Lifetime > 60*time.Second:
		return bad("lifetime %v, want up to 60s", s.Lifetime)
	case s.Republish < 0 || s.Republish >= s.Lifetime:
		return bad("republish %v, want less than the lifetime %v", s.Republish, s.Lifetime)
	case s.Skew < 0 || s.Skew > time.Minute:
		return bad("skew %v, want 0 to 1m", s.Skew)
	case s.Churn.Leave < 0 || s.Churn.Leave > 0.9:
		return bad("churn.leave %g, want 0 to 0.9", s.Churn.Leave)
	case s.Churn.Join < 0 || s.Churn.Join > 1:
		return bad("churn.join %g, want 0 to 1", s.Churn.Join)
	case s.Churn.PerMinute < 0:
		return bad("negative churn.per_minute %g", s.Churn.PerMinute)
	case s.Setup != "" && s.Setup != SetupTables && s.Setup != SetupJoin:
		return bad("setup %q, want %q or %q", s.Setup, SetupTables, SetupJoin)
	case s.Design != SetStore && s.Design != ValueRecords:
		return bad("design %d, want 1 (set-store) or 2 (value-records)", int(s.Design))
	case adversaries > s.Nodes-1:
		return bad("%d adversaries among %d nodes", adversaries, s.Nodes)
	}
	if p := s.Partition; p != nil {
		if p.At < 0 || (p.Heal != 0 && p.Heal <= p.At) || p.Fraction <= 0 || p.Fraction > 0.5 {
			return bad("partition %+v: want 0 <= at < heal (or no heal) and 0 < fraction <= 0.5", *p)
		}
	}
	if h := s.Hot; h != nil {
		if err := h.validate(s.Nodes - adversaries); err != nil {
			return bad("%v", err)
		}
		if s.Design != SetStore || s.Baseline {
			return bad("hot: the hot-name phase measures the set store alone (design 1, no baseline)")
		}
	}
	if r := s.Regions; r != nil {
		if err := r.validate(); err != nil {
			return bad("regions: %v", err)
		}
	}
	return nil
}

func (r *Regions) validate() error {
	n := len(r.Names)
	if n == 0 {
		return errors.New("no region names")
	}
	if r.Weights != nil && len(r.Weights) != n {
		return fmt.Errorf("%d weights for %d regions", len(r.Weights), n)
	}
	total := 0.0
	for _, w := range r.Weights {
		if w < 0 {
			return fmt.Errorf("negative weight %g", w)
		}
		total += w
	}
	if r.Weights != nil && total == 0 {
		return errors.New("weights sum to 0")
	}
	if len(r.OneWayMS) != n {
		return fmt.Errorf("one_way_ms has %d rows for %d regions", len(r.OneWayMS), n)
	}
	for i, row := range r.OneWayMS {
		if len(row) != n {
			return fmt.Errorf("one_way_ms row %d has %d columns for %d regions", i, len(row), n)
		}
		for j, v := range row {
			if v < 0 || v > 10000 {
				return fmt.Errorf("one_way_ms[%d][%d] = %g, want 0 to 10000", i, j, v)
			}
			if v != r.OneWayMS[j][i] {
				return fmt.Errorf("one_way_ms is not symmetric at [%d][%d]", i, j)
			}
		}
	}
	return nil
}

// RTT returns the round-trip time of a link, 2×Latency. With Regions, use
// Network.RTT, which knows where the nodes are.
func (s Scenario) RTT() time.Duration { return 2 * s.Latency }

// LoadScenario reads a Scenario from the JSON file at path and validates
// it. Zero fields are left zero (their defaults apply when it is used).
func LoadScenario(path string) (Scenario, error) {
	var s Scenario
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("sim: load scenario: %w", err)
	}
	if s, err = ParseScenario(b); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseScenario reads a Scenario from JSON and validates it.
func ParseScenario(b []byte) (Scenario, error) {
	var s Scenario
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("sim: parse scenario: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// durationField is a duration written in JSON as a Go duration string.
type durationField struct{ d *time.Duration }

func (f durationField) MarshalJSON() ([]byte, error) { return json.Marshal(f.d.String()) }

func (f durationField) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"20ms\": %w", err)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

// durations returns the JSON names and addresses of the duration fields of
// s.
func (s *Scenario) durations() map[string]*time.Duration {
	return map[string]*time.Duration{
		"latency": &s.Latency, "find_every": &s.FindEvery, "lifetime": &s.Lifetime,
		"republish": &s.Republish, "skew": &s.Skew, "reuse_for": &s.ReuseFor,
	}
}

// scenarioJSON is Scenario without its methods, so that the JSON methods
// can use the default encoding for every other field.
type scenarioJSON Scenario

// MarshalJSON writes durations as strings.
func (s Scenario) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(scenarioJSON(s))
	if err != nil {
		return nil, err
	}
	return withDurations(b, s.durations())
}

// UnmarshalJSON reads durations as strings and rejects unknown fields.
func (s *Scenario) UnmarshalJSON(b []byte) error {
	return strictWithDurations(b, (*scenarioJSON)(s), s.durations())
}

type partitionJSON Partition

// MarshalJSON writes At and Heal as duration strings.
func (p Partition) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(partitionJSON(p))
	if err != nil {
		return nil, err
	}
	return withDurations(b, map[string]*time.Duration{"at": &p.At, "heal": &p.Heal})
}

// UnmarshalJSON reads At and Heal as duration strings and rejects unknown
// fields.
func (p *Partition) UnmarshalJSON(b []byte) error {
	return strictWithDurations(b, (*partitionJSON)(p), map[string]*time.Duration{"at": &p.At, "heal": &p.Heal})
}

// withDurations replaces, in the JSON object b, each non-zero duration
// written as a number by its string form, keeping the keys' order.
func withDurations(b []byte, durs map[string]*time.Duration) ([]byte, error) {
	var fields []struct {
		k string
		v json.RawMessage
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if d, ok := durs[k]; ok {
			if v, err = json.Marshal(d.String()); err != nil {
				return nil, err
			}
		}
		fields = append(fields, struct {
			k string
			v json.RawMessage
		}{k, v})
	}
	var out bytes.Buffer
	out.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			out.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		out.Write(k)
		out.WriteByte(':')
		out.Write(f.v)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// strictWithDurations decodes the JSON object b into v, rejecting unknown
// fields and trailing data, with the named duration fields read as
// duration strings.
func strictWithDurations(b []byte, v any, durs map[string]*time.Duration) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	rest := map[string]json.RawMessage{}
	for k, m := range raw {
		if d, ok := durs[k]; ok {
			if err := (durationField{d}).UnmarshalJSON(m); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			continue
		}
		rest[k] = m
	}
	b2, err := json.Marshal(rest)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b2))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	// json.Unmarshal into the map already rejected trailing data.
	return nil
}
