package attack

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cellnode/cellnode/sim"
)

// strict makes the one weakness the suite measures but the code does not
// defend (TestAttackEclipseUnpinnedMayLose, see docs/security.md) fail the
// test instead of being logged. Every other check is a hard assertion.
var strict = flag.Bool("attack.strict", false, "fail on the known, measured weakness too (unpinned finds against Sybils)")

// runAttack runs the attack scenario in testdata/attack-<name>.json and
// logs its report.
func runAttack(t *testing.T, name string) *AttackReport {
	t.Helper()
	rep, err := loadAndRun(name)
	if rep != nil {
		t.Logf("\n%s", rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// loadAndRun runs the attack scenario in testdata/attack-<name>.json,
// sized down under the race detector, for as long as the test may run.
func loadAndRun(name string) (*AttackReport, error) {
	as, err := LoadAttack(filepath.Join("testdata", "attack-"+name+".json"))
	if err != nil {
		return nil, err
	}
	if raceEnabled && len(as.Sybils) > 3 && os.Getenv("CELLNODE_ATTACK_FULL") == "" {
		// Under the race detector on a loaded 2-core machine the eclipse
		// sweep took 130 to 320 s and ran out of time: keep none and k
		// Sybils (on the name's key, then on both keys), with half the
		// finds (CELLNODE_ATTACK_FULL=1: the whole sweep).
		as.Sybils = []int{0, as.Network.BucketSize}
		as.Finds = max(as.Finds/2, 4)
	}
	if raceEnabled && as.FloodRecords > 300 && os.Getenv("CELLNODE_ATTACK_FULL") == "" {
		// Under the race detector the flood took 140 to 440 s on a loaded
		// 2-core machine: 300 records from 8 peers still overfill a name's
		// set (256), which is what the assertions are about.
		as.FloodRecords, as.FloodPeers = 300, 8
	}
	return RunAttack(context.Background(), as)
}

// weakness reports a measured weakness: an error under -attack.strict, a
// log line otherwise.
func weakness(t *testing.T, format string, args ...any) {
	t.Helper()
	if *strict {
		t.Errorf("weakness: "+format, args...)
	} else {
		t.Logf("known weakness (fails with -attack.strict): "+format, args...)
	}
}

func row(t *testing.T, rep *AttackReport, c string) *AttackRow {
	t.Helper()
	r := rep.Row(c)
	if r == nil {
		t.Fatalf("no row %q", c)
	}
	return r
}

// TestAttackForgery: every forgery is refused by every storer, for the
// reason the record itself shows; a finder that pins the real publisher
// sees the real instances only; one that pins nothing also sees the
// adversary's valid records, and nothing else.
func TestAttackForgery(t *testing.T) {
	rep := runAttack(t, "forgery")
	for c, reason := range map[string]string{
		"bad signature (real record, endpoint changed)": "bad_signature",
		"forged withdrawal of a real instance":          "bad_signature",
		"real node's key, signed by another key":        "bad_signature",
		"real node's peer ID on the adversary's key":    "peer_mismatch",
		"delegation for another name":                   "delegation",
		"delegation for another node (copied)":          "delegation",
		"expired delegation":                            "delegation",
		"delegation not signed by the key it names":     "delegation",
		"valid record of another name":                  "wrong_name",
		"lifetime of a year":                            "lifetime",
		"issued 1 h in the future":                      "future",
		"non-canonical copy of a real record":           "non_canonical",
		"oversized (5 KiB)":                             "",
		"real record, signature S + L":                  "non_canonical_signature",
		"small-order key: identity":                     "small_order_key",
		"small-order key: order 2":                      "small_order_key",
		"small-order key: order 4":                      "small_order_key",
		"small-order key: order 8":                      "small_order_key",
		"non-canonical key: y = p + 1":                  "non_canonical_key",
		"non-canonical key: x = 0, sign 1":              "non_canonical_key",
	} {
		r := row(t, rep, c)
		if r.Attempts == 0 || r.Stored != 0 || r.Through != 0 || r.Refused != r.Attempts {
			t.Errorf("%s: %d attempts, %d refused, %d stored", c, r.Attempts, r.Refused, r.Stored)
		}
		// A storer far from the key refuses before it looks at the record
		// ("far"); every other refusal must name what is wrong with it.
		if reason != "" && int(r.Reasons[reason]+r.Reasons["far"]) != r.Attempts {
			t.Errorf("%s: refused as %v, want %d × %s (or far)", c, r.Reasons, r.Attempts, reason)
		}
	}
	for _, c := range []string{"valid open record, adversary's key", "valid, delegated by adversary's publisher"} {
		r := row(t, rep, c)
		if r.Through != 0 || int(r.Reasons["wrong_publisher"]) > r.Attempts/2 {
			t.Errorf("%s: %d got into the real publisher's set (%v)", c, r.Through, r.Reasons)
		}
	}
	if r := row(t, rep, "finds pinning the real publisher"); r.FindsOK != r.Finds || r.Through != 0 {
		t.Errorf("pinned finds: %d of %d exact, %d forged or untrusted shown", r.FindsOK, r.Finds, r.Through)
	}
	r := row(t, rep, "finds pinning nothing")
	if r.Through != 0 {
		t.Errorf("unpinned finds: %d forgeries shown", r.Through)
	}
	if r.Lost != 0 || r.FindsOK != r.Finds {
		t.Errorf("unpinned finds lost %d real instances (%d of %d finds as wanted)", r.Lost, r.FindsOK, r.Finds)
	}
}

// TestAttackReplay: no storer takes an older record over a newer one or
// an expired one; finds return neither an older version nor a withdrawn
// instance.
func TestAttackReplay(t *testing.T) {
	rep := runAttack(t, "replay")
	for _, c := range []string{"older records (captured, still live)", "withdrawn instance's last live records",
		"expired (real node, signed 2 min ago)", "expired, seq above the live record's"} {
		if r := row(t, rep, c); r.Attempts == 0 || r.Through != 0 {
			t.Errorf("%s: %d of %d got through", c, r.Through, r.Attempts)
		}
	}
	for _, c := range []string{"expired (real node, signed 2 min ago)", "expired, seq above the live record's"} {
		if r := row(t, rep, c); r.Stored != 0 {
			t.Errorf("%s: %d stored", c, r.Stored)
		}
	}
	for _, c := range []string{"  finds pinning the publisher, after planting", "finds pinning the real publisher", "finds pinning nothing"} {
		if r := row(t, rep, c); r.Through != 0 || r.Lost != 0 || r.FindsOK != r.Finds {
			t.Errorf("%s: %d finds returned an older version or the withdrawn instance, %d instances missing, %d of %d exact",
				c, r.Through, r.Lost, r.FindsOK, r.Finds)
		}
	}
}

// TestAttackSkew: within the tolerance the record is found; beyond it it
// is refused and counted.
func TestAttackSkew(t *testing.T) {
	rep := runAttack(t, "skew")
	for _, r := range rep.Rows {
		if r.FindsOK != 1 || r.Through != 0 {
			t.Errorf("%s: not as wanted (%s; stored at %d of %d, reasons %v)", r.Case, r.Note, r.Stored, r.Attempts, r.Reasons)
		}
		if r.Note == "want refused" && sumValues64(r.Reasons) == 0 {
			t.Errorf("%s: refused but no rejection counted", r.Case)
		}
	}
}

// TestAttackFlood: a finder that pins the real publisher gets every live
// instance whatever is put under the name, and nothing gets into the real
// publisher's set.
func TestAttackFlood(t *testing.T) {
	rep := runAttack(t, "flood")
	pinnedRows, openRows := 0, 0
	for i, r := range rep.Rows {
		switch {
		case strings.Contains(r.Case, "records from"):
			if r.Through != 0 {
				t.Errorf("%s: %d records got into the real publisher's set", r.Case, r.Through)
			}
		case strings.Contains(r.Case, "pinning the real publisher"):
			pinnedRows++
			if r.Lost != 0 || r.FindsOK != r.Finds {
				t.Errorf("flood %d: pinned finds lost %d instances (%d of %d exact)", pinnedRows, r.Lost, r.FindsOK, r.Finds)
			}
		case strings.Contains(r.Case, "pinning nothing"):
			// Of the 4 instances, the 2 that announced before the flood
			// hold their places in the name's set; the 2 that start
			// after it may be crowded out, except by a flood from one
			// publisher key, which the per-publisher quota holds to a
			// quarter of the set.
			openRows++
			flood := rep.Rows[i-2].Case
			maxLost := 2 * r.Finds
			if strings.HasPrefix(flood, "one publisher key") {
				maxLost = 0
			}
			if r.Lost > maxLost {
				t.Errorf("after %q, unpinned finds lost %d real instances, want at most %d (the late ones)", flood, r.Lost, maxLost)
			}
			t.Logf("after %q, unpinned finds lost %d of %d real instances", flood, r.Lost, 4*r.Finds)
		}
	}
	if pinnedRows != 3 || openRows != 3 {
		t.Fatalf("%d pinned rows, %d unpinned", pinnedRows, openRows)
	}
	for _, r := range rep.Rows {
		switch {
		case strings.HasPrefix(r.Case, "one peer,") && (r.Stored != 100 || r.Reasons["rate_limited"] != uint64(r.Attempts-100)):
			// The storer's clock stands still: the burst (100) gets in,
			// every other PUT is refused for the rate.
			t.Errorf("one fast peer, clock stopped: %d stored, %d rate limited of %d, want 100 and the rest", r.Stored, r.Reasons["rate_limited"], r.Attempts)
		case strings.HasSuffix(r.Case, "from one /16") && r.Lost != 0:
			t.Errorf("a flood from one network kept a new cell's set out: %+v", r)
		}
	}
}

// TestAttackEclipse: without Sybils every find succeeds; a finder that
// pins the publisher loses nothing to Sybils from one /16, up to k of them
// on the name's key and on the publisher's (replica diversity), and is
// never shown a fake; an unpinned finder loses nothing to 3 Sybils.
func TestAttackEclipse(t *testing.T) {
	rep := eclipseReport(t)
	for _, r := range rep.Rows {
		switch {
		case strings.HasPrefix(r.Case, "0 Sybils"):
			if r.FindsOK != r.Finds {
				t.Errorf("%s: %d of %d finds without Sybils", r.Case, r.FindsOK, r.Finds)
			}
		case strings.Contains(r.Case, "pinning the publisher"):
			if r.Lost != 0 || r.Shown != 0 {
				t.Errorf("%s: %d instances lost, %d fakes shown to a pinned finder", r.Case, r.Lost, r.Shown)
			}
		case strings.HasPrefix(r.Case, "3 Sybils") && r.Lost != 0:
			t.Errorf("%s: %d instances lost to an unpinned finder with 3 Sybils", r.Case, r.Lost)
		}
	}
}

// TestAttackEclipseUnpinnedMayLose is the suite's one known weakness: an
// unpinned finder may lose an instance to 7 to 12 Sybils from one /16 on
// the name's key (about one run in three before storers said whether they
// are core; the honest storers' sets around the Sybils are ragged and
// three of them can agree on a subset). It logs each loss, and fails on it
// only with -attack.strict (docs/security.md).
func TestAttackEclipseUnpinnedMayLose(t *testing.T) {
	rep := eclipseReport(t)
	for _, r := range rep.Rows {
		if !strings.Contains(r.Case, "pinning the publisher") && !strings.HasPrefix(r.Case, "0 Sybils") && r.Lost > 0 {
			weakness(t, "%s: %d instances lost to an unpinned finder", r.Case, r.Lost)
		}
	}
}

// eclipseReport runs the eclipse scenario once for both eclipse tests.
var eclipseOnce struct {
	sync.Once
	rep *AttackReport
	err error
}

func eclipseReport(t *testing.T) *AttackReport {
	t.Helper()
	eclipseOnce.Do(func() { eclipseOnce.rep, eclipseOnce.err = loadAndRun("eclipse") })
	if eclipseOnce.rep != nil {
		t.Logf("\n%s", eclipseOnce.rep)
	}
	if eclipseOnce.err != nil {
		t.Fatal(eclipseOnce.err)
	}
	return eclipseOnce.rep
}

// TestAttackPartition: after the cut heals, finds on both sides see both
// instances with records published after the heal, and no finder ever
// sees a sequence number go back.
func TestAttackPartition(t *testing.T) {
	rep := runAttack(t, "partition")
	if n := rep.Through(); n != 0 {
		t.Errorf("%d times a finder saw an instance's sequence number go back", n)
	}
	last := rep.Rows[len(rep.Rows)-1]
	if last.FindsOK != last.Finds {
		t.Errorf("%s: %d of %d finds converged (%s)", last.Case, last.FindsOK, last.Finds, last.Note)
	}
	if r := rep.Row("healed, links only"); r == nil || r.FindsOK != r.Finds {
		t.Errorf("links alone did not bring the sides together within the storer check (reuse_for) and 2 republish intervals: %+v", r)
	}
}

func sumValues64(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func TestLoadAttack(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "attack-*.json"))
	if err != nil || len(paths) < 6 {
		t.Fatalf("%d attack scenarios (%v)", len(paths), err)
	}
	for _, p := range paths {
		if _, err := LoadAttack(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown field":  `{"attack": "forgery", "nodez": 3}`,
		"unknown attack": `{"attack": "teleport"}`,
		"bad duration":   `{"attack": "replay", "republish": 5}`,
		"skew, no cases": `{"attack": "skew"}`,
		"sybils order":   `{"attack": "eclipse", "sybils": [8, 3]}`,
	} {
		p := filepath.Join(dir, "x.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadAttack(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	if _, err := RunAttack(context.Background(), AttackScenario{Attack: "x"}); !errors.Is(err, sim.ErrBadScenario) {
		t.Errorf("RunAttack of a bad scenario: %v", err)
	}
}
