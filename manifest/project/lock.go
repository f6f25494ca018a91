package project

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest"
	"github.com/pelletier/go-toml/v2/unstable"
)

// LockFile is the name of the file, next to Cell.toml, in which cellnode
// resolve records what each dependency resolved to.
const LockFile = "Cell.lock"

// LockVersion is the version of the Cell.lock format that this package
// reads and writes.
const LockVersion = 1

// lockHeader is the first line of every Cell.lock that Marshal writes.
const lockHeader = "# Cell.lock: written by cellnode resolve; do not edit by hand.\n"

// ErrInvalidLock means Cell.lock is not valid, or a Lock cannot be written
// because it would not be. Match it with errors.Is.
var ErrInvalidLock = errors.New("manifest: invalid Cell.lock")

// Lock is the content of Cell.lock: what each dependency in Cell.toml
// resolved to. Its methods are not safe for concurrent use.
type Lock struct {
	// Version is the format version, LockVersion.
	Version int `toml:"version"`
	// Cells are the resolved dependencies, at most one per Name. Marshal
	// writes them sorted by Name; ParseLock keeps the file's order.
	Cells []LockedCell `toml:"cell"`
}

// LockedCell is what one dependency resolved to.
type LockedCell struct {
	// Name is the dependency's key in Cell.toml. Required.
	Name string `toml:"name"`
	// Cell is the dependency's full name, org/name; "" if not known (an
	// instance found running locally, say, before the manifest was read).
	Cell string `toml:"cell"`
	// Git is the URL it was resolved from. Required.
	Git string `toml:"git"`
	// Tag is the tag or branch resolved; "" for the remote's HEAD.
	Tag string `toml:"tag"`
	// Commit is the CID of the resolved commit, in its canonical form
	// (CIDOf(h).String(), "baf4bcf..."); "" if none was resolved.
	Commit string `toml:"commit"`
	// Fingerprint is the manifest's fingerprint, as in Cell.json; "" if
	// none.
	Fingerprint string `toml:"fingerprint"`
	// Publishers are the keys allowed to publish the cell, as in
	// Cell.json. Marshal writes them sorted.
	Publishers []string `toml:"publishers"`
	// Endpoints are the instances found, in the order given.
	Endpoints []LockedEndpoint `toml:"endpoints"`
	// Resolved is when the dependency was resolved; the file holds it in
	// UTC to the second (ParseLock returns it so). The zero time means
	// unknown and is not written.
	Resolved time.Time `toml:"resolved"`
}

// LockedEndpoint is an instance of a locked cell and how far it was.
type LockedEndpoint struct {
	// Endpoint is where the instance is reached (a multiaddr or a
	// socket path). Required.
	Endpoint string `toml:"endpoint"`
	// LatencyMS is the measured round-trip time in milliseconds; 0 if not
	// measured. It must be finite and not negative.
	LatencyMS float64 `toml:"latency_ms"`
}

// lockSchema returns the schema of Cell.lock.
func lockSchema() *tomlField {
	str := &tomlField{kind: unstable.String}
	return &tomlField{kind: unstable.Table, fields: map[string]*tomlField{
		"version": {kind: unstable.Integer},
		"cell": {kind: unstable.ArrayTable, fields: map[string]*tomlField{
			"name": str, "cell": str, "git": str, "tag": str, "commit": str, "fingerprint": str,
			"publishers": {kind: unstable.Array, elem: unstable.String},
			"endpoints": {kind: unstable.ArrayTable, fields: map[string]*tomlField{
				"endpoint":   str,
				"latency_ms": {kind: unstable.Float},
			}},
			"resolved": {kind: unstable.DateTime},
		}},
	}}
}

// ParseLock parses and validates Cell.lock. It is strict like ParseDeps:
// input larger than 1 MiB, TOML syntax errors, duplicate keys, values of
// the wrong type and unknown fields are rejected, and so are a version
// other than LockVersion and entries that are not valid (see LockedCell:
// names as in Cell.toml and unique, a git URL, a commit CID in canonical
// form if any, publishers and fingerprint as in Cell.json, a resolved time
// with a UTC offset, endpoints not empty, latencies finite and not
// negative). Every
// error wraps ErrInvalidLock and, when it concerns part of the document,
// starts with its position: "Cell.lock:LINE:COL: ".
func ParseLock(b []byte) (*Lock, error) {
	return parseLock(b, LockFile)
}

// parseLock is ParseLock with file naming the input in positions.
func parseLock(b []byte, file string) (*Lock, error) {
	if len(b) > maxTOMLSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidLock, maxTOMLSize)
	}
	var l Lock
	doc, err := decodeTOML(b, file, lockSchema(), &l)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLock, err)
	}
	if l.Version != LockVersion {
		return nil, fmt.Errorf("%w: %s: version %d: unsupported (want %d)", ErrInvalidLock, doc.at("version"), l.Version, LockVersion)
	}
	for i := range l.Cells {
		c := &l.Cells[i]
		c.Resolved = c.Resolved.UTC().Truncate(time.Second)
		if len(c.Publishers) == 0 {
			c.Publishers = nil
		}
		if len(c.Endpoints) == 0 {
			c.Endpoints = nil
		}
	}
	if i, err := l.validate(); err != nil {
		at := doc.file
		if offs := doc.elems["cell"]; i < len(offs) {
			at = doc.position(offs[i])
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidLock, at, err)
	}
	return &l, nil
}

// validate checks the fields of l; on error it also returns the index of
// the entry at fault.
func (l *Lock) validate() (int, error) {
	if l.Version != LockVersion {
		return 0, fmt.Errorf("version %d: unsupported (want %d)", l.Version, LockVersion)
	}
	seen := make(map[string]bool, len(l.Cells))
	for i, c := range l.Cells {
		if err := c.validate(); err != nil {
			return i, fmt.Errorf("cell %q: %w", c.Name, err)
		}
		if seen[c.Name] {
			return i, fmt.Errorf("cell %q: locked twice", c.Name)
		}
		seen[c.Name] = true
	}
	return 0, nil
}

// validate checks the fields of one entry.
func (c *LockedCell) validate() error {
	if err := checkDepKey(c.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if c.Cell != "" {
		if err := manifest.CheckName(c.Cell); err != nil {
			return fmt.Errorf("cell %q: %w %s", c.Cell, err, manifest.NameRule)
		}
	}
	if c.Git == "" {
		return errors.New("git: missing")
	}
	if err := manifest.CheckGitURL(c.Git); err != nil {
		return fmt.Errorf("git %q: %w", c.Git, err)
	}
	if c.Tag != "" {
		if err := manifest.CheckTag(c.Tag); err != nil {
			return err
		}
	}
	if c.Commit != "" {
		if id, err := manifest.ParseCID(c.Commit); err != nil {
			return fmt.Errorf("commit: %w", err)
		} else if id.String() != c.Commit {
			return fmt.Errorf("commit %q: not in canonical form (want %s)", c.Commit, id)
		}
	}
	if c.Fingerprint != "" {
		if err := manifest.CheckFingerprint(c.Fingerprint); err != nil {
			return fmt.Errorf("fingerprint %q: %w", c.Fingerprint, err)
		}
	}
	for _, p := range c.Publishers {
		if err := manifest.CheckPublicKey(p); err != nil {
			return fmt.Errorf("publisher %q: %w", p, err)
		}
	}
	for i, e := range c.Endpoints {
		if e.Endpoint == "" {
			return fmt.Errorf("endpoints[%d]: endpoint missing", i)
		}
		if err := manifest.CheckGitURL(e.Endpoint); err != nil { // same rules: printable UTF-8
			return fmt.Errorf("endpoints[%d]: endpoint %q: %w", i, e.Endpoint, err)
		}
		if math.IsNaN(e.LatencyMS) || math.IsInf(e.LatencyMS, 0) || e.LatencyMS < 0 {
			return fmt.Errorf("endpoints[%d]: latency_ms %v: want a finite number of milliseconds, not negative", i, e.LatencyMS)
		}
	}
	if y := c.Resolved.UTC().Year(); !c.Resolved.IsZero() && (y < 1 || y > 9999) {
		return fmt.Errorf("resolved %v: year out of range", c.Resolved)
	}
	return nil
}

// LoadLock reads and parses dir/Cell.lock. A missing file is an empty
// lock, &Lock{Version: LockVersion}, and no error; parse errors wrap
// ErrInvalidLock and give positions in the file's path.
func LoadLock(dir string) (*Lock, error) {
	b, path, err := readTOML(dir, LockFile)
	if errors.Is(err, fs.ErrNotExist) {
		return &Lock{Version: LockVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) > maxTOMLSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrInvalidLock, path, maxTOMLSize)
	}
	return parseLock(b, path)
}

// Get returns the entry named name, or nil if there is none. The pointer
// is into l.Cells: changes through it change l, until the next Put.
func (l *Lock) Get(name string) *LockedCell {
	if l == nil {
		return nil
	}
	for i := range l.Cells {
		if l.Cells[i].Name == name {
			return &l.Cells[i]
		}
	}
	return nil
}

// Put adds c, replacing the entry with the same Name if there is one.
func (l *Lock) Put(c LockedCell) {
	if old := l.Get(c.Name); old != nil {
		*old = c
		return
	}
	l.Cells = append(l.Cells, c)
}

// Marshal returns l in the Cell.lock format: a header comment, the
// version, then one [[cell]] table per entry, sorted by Name, with its
// fields in a fixed order (name, cell, git, tag, commit, fingerprint,
// publishers sorted, endpoints, resolved; empty ones left out). The same
// Lock, whatever the order of its entries and publishers, always gives
// the same bytes, and ParseLock reads them back. A Lock that ParseLock
// would reject is an error wrapping ErrInvalidLock. l is not modified.
func (l *Lock) Marshal() ([]byte, error) {
	if _, err := l.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidLock, err)
	}
	cells := slices.Clone(l.Cells)
	slices.SortFunc(cells, func(a, b LockedCell) int { return strings.Compare(a.Name, b.Name) })
	var sb strings.Builder
	sb.WriteString(lockHeader)
	fmt.Fprintf(&sb, "version = %d\n", l.Version)
	str := func(key, v string) {
		if v != "" {
			sb.WriteString(key + " = " + tomlString(v) + "\n")
		}
	}
	for _, c := range cells {
		sb.WriteString("\n[[cell]]\n")
		str("name", c.Name)
		str("cell", c.Cell)
		str("git", c.Git)
		str("tag", c.Tag)
		str("commit", c.Commit)
		str("fingerprint", c.Fingerprint)
		if len(c.Publishers) > 0 {
			pubs := slices.Clone(c.Publishers)
			slices.Sort(pubs)
			sb.WriteString("publishers = [\n")
			for _, p := range pubs {
				sb.WriteString("  " + tomlString(p) + ",\n")
			}
			sb.WriteString("]\n")
		}
		if len(c.Endpoints) > 0 {
			sb.WriteString("endpoints = [\n")
			for _, e := range c.Endpoints {
				fmt.Fprintf(&sb, "  { endpoint = %s, latency_ms = %s },\n", tomlString(e.Endpoint), tomlFloat(e.LatencyMS))
			}
			sb.WriteString("]\n")
		}
		if !c.Resolved.IsZero() {
			sb.WriteString("resolved = " + c.Resolved.UTC().Truncate(time.Second).Format(time.RFC3339) + "\n")
		}
	}
	return []byte(sb.String()), nil
}

// tomlFloat writes a finite f as a TOML float.
func tomlFloat(f float64) string {
	if f == 0 {
		return "0.0" // not "-0.0"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// WriteLock writes l to dir/Cell.lock, mode 0644, atomically: a temporary
// file in dir is written, synced and renamed over Cell.lock, so readers
// see the old file or the new one, never a mix, and a failed write leaves
// the old file as it was and no temporary file behind. Errors from Marshal
// wrap ErrInvalidLock.
func WriteLock(dir string, l *Lock) error {
	b, err := l.Marshal()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, LockFile)
	if err := safefile.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("manifest: write %s: %w", path, err)
	}
	return nil
}
