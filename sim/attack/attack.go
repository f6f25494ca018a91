package attack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cellnode/cellnode/sim"

	"github.com/cellnode/cellnode/node"
)

// Attack names an attack scenario: what the adversary does to the network.
type Attack string

// The attacks of issue 5. Each one's doc says what is measured.
const (
	// AttackForgery: an adversary host puts crafted records for the cell
	// at every node, into the name's set and into the real publisher's
	// set: bad signatures, another node's peer ID, delegations for another
	// name or node, expired delegations, delegations not signed by the key
	// they name, records of another name, and valid records under keys of
	// its own (open, or delegated by a publisher key of its own). Every
	// forgery must be refused by every storer, and a finder that pins the
	// real publisher must return the real instances only.
	AttackForgery Attack = "forgery"
	// AttackReplay: an adversary captures the real instances' records as
	// they are republished and sends the older ones back to every node,
	// with records expired long ago and the last live record of an
	// instance that withdrew. No storer may take an older record over a
	// newer one, none may take an expired one, and no find may return an
	// older version or a withdrawn instance.
	AttackReplay Attack = "replay"
	// AttackSkew: the publisher's, the storers' and the finder's clocks
	// are set apart (Scenario Skew cases); within the 5 s tolerance the
	// record is found, beyond it it is refused and the refusal counted.
	AttackSkew Attack = "skew"
	// AttackFlood: many adversary peers put many valid records under the
	// cell's name, from one publisher key, from many node keys and from
	// many publisher keys. A finder that pins the real publisher must
	// still get every live instance; the report says what a finder that
	// pins nothing loses, and what the per-peer rate limit lets through.
	AttackFlood Attack = "flood"
	// AttackEclipse: Sybil nodes whose peer IDs are ground close to the
	// cell's key join, serve kad-dht honestly (so they enter routing
	// tables and lookups return them) and answer the instances protocol
	// with nothing or with junk. The report gives find success against the
	// number of Sybils, first on the name's key, then on the publisher's.
	AttackEclipse Attack = "eclipse"
	// AttackPartition: the network is cut in two, one instance on each
	// side, and healed; the report says how long finds on each side take
	// to see both instances again, and whether a sequence number was ever
	// seen going back.
	AttackPartition Attack = "partition"
)

// AttackScenario is an attack scenario as data. Zero fields take the
// defaults named in their comments. In JSON, durations are Go duration
// strings ("4s", "-70s"); unknown fields are an error.
type AttackScenario struct {
	// Name labels the scenario in reports.
	Name string `json:"name,omitempty"`
	// Attack is what the adversary does.
	Attack Attack `json:"attack"`
	// Network is the honest network (nodes, k, latency, seed). Its Cells,
	// InstancesPerCell, Finds and Design are not used.
	Network sim.Scenario `json:"network"`
	// Instances is the number of real instances of the attacked cell;
	// 0 means 3.
	Instances int `json:"instances,omitempty"`
	// Finds is the number of finds per measurement, each from a random
	// honest node; 0 means 10.
	Finds int `json:"finds,omitempty"`
	// Sybils (eclipse) are the numbers of Sybils on the name's key to
	// measure, in increasing order; then as many again on the publisher's
	// key as the last one. Nil means 0, k/2, k-1, k, 3k/2 for k the
	// bucket size.
	Sybils []int `json:"sybils,omitempty"`
	// FloodPeers (flood) is the number of adversary peers; 0 means 12.
	FloodPeers int `json:"flood_peers,omitempty"`
	// FloodRecords (flood) is the number of records of each flood (one
	// distinct node key each); 0 means 600.
	FloodRecords int `json:"flood_records,omitempty"`
	// Skew (skew) are the clock settings to measure.
	Skew []SkewCase `json:"skew,omitempty"`
	// Republish is the real announcers' republish period; 0 means 500 ms
	// (the simulator's runs are short; production uses 20 s).
	Republish node.Duration `json:"republish,omitempty"`
}

// SkewCase sets the clocks of the publisher, of every storer and of the
// finder relative to true time, and says whether the record should be
// found.
type SkewCase struct {
	Publisher node.Duration `json:"publisher,omitempty"`
	Storer    node.Duration `json:"storer,omitempty"`
	Finder    node.Duration `json:"finder,omitempty"`
	Found     bool          `json:"found"`
}

// withDefaults returns as with zero fields set to their defaults.
func (as AttackScenario) withDefaults() AttackScenario {
	as.Network = as.Network.WithDefaults()
	if as.Instances == 0 {
		as.Instances = 3
	}
	if as.Finds == 0 {
		as.Finds = 10
	}
	if as.FloodPeers == 0 {
		as.FloodPeers = 12
	}
	if as.FloodRecords == 0 {
		as.FloodRecords = 600
	}
	if as.Republish == 0 {
		as.Republish = node.Duration(500 * time.Millisecond)
	}
	if as.Sybils == nil {
		k := as.Network.BucketSize
		as.Sybils = []int{0, k / 2, k - 1, k, k + k/2}
	}
	return as
}

// Validate reports the first field of as that is out of range.
func (as AttackScenario) Validate() error {
	if err := as.Network.Validate(); err != nil {
		return err
	}
	as = as.withDefaults()
	switch {
	case !slices.Contains([]Attack{AttackForgery, AttackReplay, AttackSkew, AttackFlood, AttackEclipse, AttackPartition}, as.Attack):
		return fmt.Errorf("%w: attack %q", sim.ErrBadScenario, as.Attack)
	case as.Instances < 1 || as.Instances > as.Network.Nodes/2:
		return fmt.Errorf("%w: instances %d, want 1 to half the nodes", sim.ErrBadScenario, as.Instances)
	case as.Finds < 1:
		return fmt.Errorf("%w: finds %d", sim.ErrBadScenario, as.Finds)
	case as.FloodPeers < 1 || as.FloodPeers > 5000 || as.FloodRecords < 1 || as.FloodRecords > 1_000_000:
		return fmt.Errorf("%w: flood of %d records from %d peers", sim.ErrBadScenario, as.FloodRecords, as.FloodPeers)
	case !slices.IsSorted(as.Sybils) || len(as.Sybils) > 0 && (as.Sybils[0] < 0 || as.Sybils[len(as.Sybils)-1] > 256):
		return fmt.Errorf("%w: sybils %v, want increasing counts of 0 to 256", sim.ErrBadScenario, as.Sybils)
	case as.Republish < 0:
		return fmt.Errorf("%w: republish %v", sim.ErrBadScenario, time.Duration(as.Republish))
	case as.Attack == AttackReplay && as.Instances < 2:
		return fmt.Errorf("%w: a replay needs 2 instances or more", sim.ErrBadScenario)
	case as.Attack == AttackSkew && len(as.Skew) == 0:
		return fmt.Errorf("%w: skew attack without skew cases", sim.ErrBadScenario)
	}
	return nil
}

// LoadAttack reads an AttackScenario from the JSON file at path and
// validates it.
func LoadAttack(path string) (AttackScenario, error) {
	var as AttackScenario
	b, err := os.ReadFile(path)
	if err != nil {
		return as, fmt.Errorf("sim: load attack: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&as); err != nil {
		return as, fmt.Errorf("sim: load attack %s: %w", path, err)
	}
	if err := as.Validate(); err != nil {
		return as, fmt.Errorf("%s: %w", path, err)
	}
	return as, nil
}

// AttackReport is what an attack scenario measured: one row per case.
type AttackReport struct {
	Scenario AttackScenario `json:"scenario"` // defaults applied
	Rows     []AttackRow    `json:"rows"`
	Seconds  float64        `json:"seconds"` // wall time, setup included
	Notes    []string       `json:"notes,omitempty"`
}

// AttackRow is one case of an attack. Attempts are messages the adversary
// sent (or, for Sybils, answered); Refused and Stored split them by the
// storers' answer. Through counts what got past a defence it must not
// pass: a forged, stale or expired record a storer took, or a record a
// finder returned that it must not. Finds, FindsOK and Lost say how the
// finds of the case went: FindsOK returned exactly the live real
// instances, Lost counts real instances missing from a find (summed over
// finds).
type AttackRow struct {
	Case     string            `json:"case"`
	Attempts int               `json:"attempts"`
	Refused  int               `json:"refused"`
	Stored   int               `json:"stored"`
	Through  int               `json:"through"`
	Finds    int               `json:"finds,omitempty"`
	FindsOK  int               `json:"finds_ok,omitempty"`
	Lost     int               `json:"lost,omitempty"`
	Shown    int               `json:"shown,omitempty"` // adversary instances a find showed (summed over finds)
	Reasons  map[string]uint64 `json:"reasons,omitempty"`
	Millis   float64           `json:"ms,omitempty"` // p50 find time, when measured
	Note     string            `json:"note,omitempty"`
}

// Row returns the row named c, or nil.
func (r *AttackReport) Row(c string) *AttackRow {
	for i := range r.Rows {
		if r.Rows[i].Case == c {
			return &r.Rows[i]
		}
	}
	return nil
}

// Through returns the sum of Through over every row.
func (r *AttackReport) Through() int {
	n := 0
	for _, row := range r.Rows {
		n += row.Through
	}
	return n
}

// String returns the report as WriteText writes it.
func (r *AttackReport) String() string {
	var b strings.Builder
	_ = r.WriteText(&b)
	return b.String()
}

// WriteText writes the report as a table for people.
func (r *AttackReport) WriteText(w io.Writer) error {
	sc := r.Scenario
	var b strings.Builder
	fmt.Fprintf(&b, "attack %s (%s): %d honest nodes, k=%d, %d real instances, seed %d, %.1f s\n",
		sc.Attack, sc.Name, sc.Network.Nodes, sc.Network.BucketSize, sc.Instances, sc.Network.Seed, r.Seconds)
	fmt.Fprintf(&b, "  %-46s %8s %8s %7s %7s %9s %5s %6s %7s\n", "case", "attempts", "refused", "stored", "through", "finds ok", "lost", "shown", "p50 ms")
	for _, row := range r.Rows {
		finds := ""
		if row.Finds > 0 {
			finds = fmt.Sprintf("%d/%d", row.FindsOK, row.Finds)
		}
		ms := ""
		if row.Millis > 0 {
			ms = fmt.Sprintf("%.0f", row.Millis)
		}
		fmt.Fprintf(&b, "  %-46s %8d %8d %7d %7d %9s %5d %6d %7s", row.Case, row.Attempts, row.Refused, row.Stored, row.Through, finds, row.Lost, row.Shown, ms)
		if len(row.Reasons) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(row.Reasons)) {
				parts = append(parts, fmt.Sprintf("%s=%d", k, row.Reasons[k]))
			}
			fmt.Fprintf(&b, "  [%s]", strings.Join(parts, " "))
		}
		if row.Note != "" {
			fmt.Fprintf(&b, "  %s", row.Note)
		}
		b.WriteByte('\n')
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// RunAttack builds the honest network of as, runs the attack on it and
// closes it. It returns an error only when it cannot measure (setup that
// fails, ctx ending); what the attack achieved is in the report.
func RunAttack(ctx context.Context, as AttackScenario) (*AttackReport, error) {
	if err := as.Validate(); err != nil {
		return nil, err
	}
	as = as.withDefaults()
	start := time.Now()
	nw, err := sim.New(ctx, as.Network)
	if err != nil {
		return nil, err
	}
	a := newArena(nw, as)
	defer a.close()
	rep := &AttackReport{Scenario: as}
	switch as.Attack {
	case AttackForgery:
		err = a.forgery(ctx, rep)
	case AttackReplay:
		err = a.replay(ctx, rep)
	case AttackSkew:
		err = a.skew(ctx, rep)
	case AttackFlood:
		err = a.flood(ctx, rep)
	case AttackEclipse:
		err = a.eclipse(ctx, rep)
	case AttackPartition:
		err = a.partition(ctx, rep)
	default:
		err = fmt.Errorf("%w: attack %q", sim.ErrBadScenario, as.Attack)
	}
	rep.Seconds = time.Since(start).Seconds()
	if err != nil {
		return rep, fmt.Errorf("sim: attack %s: %w", as.Attack, err)
	}
	return rep, nil
}

// errAttack marks a measurement the harness could not make.
var errAttack = errors.New("sim: attack harness")
