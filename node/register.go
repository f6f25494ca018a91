package node

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DelegationPEM is the PEM block type of a delegation file, as `cellnode
// key delegate` writes it.
const DelegationPEM = "CELLNODE DELEGATION"

// Limits of a registration's health check interval.
const (
	MinCheckInterval = 50 * time.Millisecond
	MaxCheckInterval = time.Minute
)

// Registration asks the agent to announce one cell, as the API's PUT
// /v1/cells/{org}/{name} body and a config file's "cells" entries spell it
// (docs/api.md).
type Registration struct {
	Name     string `json:"name"`               // "org/name"
	Endpoint string `json:"endpoint"`           // "host:port", ":port" or "unix:/path"
	Region   string `json:"region,omitempty"`   // optional
	Manifest string `json:"manifest,omitempty"` // optional commit CID
	Check    Check  `json:"check,omitzero"`
	// Delegation is a delegation from a publisher key for this cell and
	// this agent's node key: the PEM text `cellnode key delegate` writes,
	// or the base64 of its bytes. "" publishes open records.
	Delegation string `json:"delegation,omitempty"`
	// DelegationFile names a delegation PEM file, relative to the config
	// file's directory; config files only.
	DelegationFile string `json:"delegation_file,omitempty"`
}

// Check is a registration's health check: the agent dials the endpoint
// (TCP connect or unix-socket dial) every Interval and announces the cell
// while it answers.
type Check struct {
	Interval Duration `json:"interval,omitzero"` // 0 means 2 s; 50 ms to 1 min
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("2s", "500ms", "-4s"): the module's one JSON duration type (the agent's
// registrations, the simulator's attack scenarios).
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"2s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"2s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// CellInfo is one registered cell as GET /v1/cells lists it.
type CellInfo struct {
	Name          string          `json:"name"`
	Endpoint      string          `json:"endpoint"`
	Region        string          `json:"region,omitempty"`
	Manifest      string          `json:"manifest,omitempty"`
	CheckInterval string          `json:"check_interval"`
	Publisher     string          `json:"publisher,omitempty"` // base64 key of the delegation's publisher
	NotAfter      time.Time       `json:"delegation_not_after,omitzero"`
	Source        string          `json:"source"` // "api", or the config file that defines the cell
	Status        AnnouncerStatus `json:"status"`
}

// SourceAPI is the source of cells registered through the API.
const SourceAPI = "api"

// Errors of Register and Deregister. Each is wrapped with the details.
var (
	ErrBadRegistration = errors.New("node: bad registration")
	ErrConflict        = errors.New("node: registration conflict")
	ErrNotRegistered   = errors.New("node: cell not registered")
)

// cellEntry is one registered cell.
type cellEntry struct {
	reg    Registration // as given, normalised (no delegation text)
	ann    Announcement
	source string
	an     *Announcer
}

// prepare checks reg and turns it into an announcement, reading the
// delegation; it starts nothing.
func (a *Agent) prepare(reg Registration) (Announcement, error) {
	bad := func(format string, args ...any) (Announcement, error) {
		return Announcement{}, fmt.Errorf("%w: %s", ErrBadRegistration, fmt.Sprintf(format, args...))
	}
	if _, err := record.ParseName(reg.Name); err != nil {
		return bad("%v", err)
	}
	if reg.Endpoint == "" {
		return bad("%s: endpoint is required (HOST:PORT, :PORT or unix:PATH)", reg.Name)
	}
	if _, err := ParseEndpoint(reg.Endpoint); err != nil {
		return bad("%s: %v", reg.Name, err)
	}
	if len(reg.Region) > record.MaxRegionLen {
		return bad("%s: region longer than %d bytes", reg.Name, record.MaxRegionLen)
	}
	ann := Announcement{Name: reg.Name, Endpoint: reg.Endpoint, Region: reg.Region,
		CheckInterval: time.Duration(reg.Check.Interval)}
	if iv := ann.CheckInterval; iv != 0 && (iv < MinCheckInterval || iv > MaxCheckInterval) {
		return bad("%s: check interval %v: want %v to %v", reg.Name, iv, MinCheckInterval, MaxCheckInterval)
	}
	if ann.CheckInterval == 0 {
		ann.CheckInterval = 2 * time.Second
	}
	if reg.Manifest != "" {
		c, err := manifest.ParseCID(reg.Manifest)
		if err != nil {
			return bad("%s: manifest: %v", reg.Name, err)
		}
		ann.Manifest = c
	}
	if reg.Delegation != "" {
		d, err := ParseDelegation(reg.Delegation)
		if err != nil {
			return bad("%s: %v", reg.Name, err)
		}
		if err := d.CheckFor(reg.Name, a.n.PublicKey(), a.n.now()); err != nil {
			if errors.Is(err, record.ErrDelegation) && !d.Node.Equal(a.n.PublicKey()) {
				return bad("%s: the delegation is for node %s, not this agent's node %s (run cellnode key delegate --node %s)",
					reg.Name, nodeID(d.Node), a.n.ID(), a.n.ID())
			}
			return bad("%s: %v", reg.Name, err)
		}
		ann.Delegation = d
	}
	return ann, nil
}

func nodeID(pub ed25519.PublicKey) string {
	k, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		return "(bad key)"
	}
	id, err := peer.IDFromPublicKey(k)
	if err != nil {
		return "(bad key)"
	}
	return id.String()
}

// ParseDelegation reads a delegation written as a PEM block (DelegationPEM)
// or as the standard base64 of its bytes, and verifies its signature (not
// its dates or whom it is for: see record.Delegation.CheckFor).
func ParseDelegation(s string) (*record.Delegation, error) {
	var raw []byte
	if strings.Contains(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil || blk.Type != DelegationPEM {
			return nil, fmt.Errorf("delegation: not a %s PEM block", DelegationPEM)
		}
		raw = blk.Bytes
	} else {
		var err error
		if raw, err = base64.StdEncoding.DecodeString(strings.TrimSpace(s)); err != nil {
			return nil, fmt.Errorf("delegation: want a %s PEM block or base64: %w", DelegationPEM, err)
		}
	}
	return record.DecodeDelegation(raw)
}

// sameAnnouncement reports whether two announcements announce the same.
func sameAnnouncement(x, y Announcement) bool {
	dx, dy := []byte(nil), []byte(nil)
	if x.Delegation != nil {
		dx = x.Delegation.Bytes()
	}
	if y.Delegation != nil {
		dy = y.Delegation.Bytes()
	}
	return x.Name == y.Name && x.Endpoint == y.Endpoint && x.Region == y.Region &&
		x.Manifest.Equals(y.Manifest) && x.CheckInterval == y.CheckInterval && slices.Equal(dx, dy)
}

// RegisterResult says what Register did.
type RegisterResult string

// What Register did.
const (
	Created   RegisterResult = "created"
	Replaced  RegisterResult = "replaced"
	Unchanged RegisterResult = "unchanged"
)

// Register starts announcing the cell reg names, from source (SourceAPI or
// a config file's path). A cell of that name registered before is
// replaced: its announcer withdraws the old record and a new one
// publishes (the new record's higher sequence number supersedes the
// withdrawal); an identical registration changes nothing. A bad
// registration is an error wrapping ErrBadRegistration and changes
// nothing; so is one from the API for a cell a config file defines
// (ErrConflict), and one past the agent's cell limit.
func (a *Agent) Register(ctx context.Context, reg Registration, source string) (RegisterResult, error) {
	ann, err := a.prepare(reg)
	if err != nil {
		return "", err
	}
	a.opMu.Lock()
	defer a.opMu.Unlock()
	return a.register(ctx, reg, ann, source)
}

// register is Register with opMu held and reg prepared.
func (a *Agent) register(ctx context.Context, reg Registration, ann Announcement, source string) (RegisterResult, error) {
	reg.Delegation, reg.DelegationFile = "", ""
	a.mu.Lock()
	old := a.cells[reg.Name]
	full := old == nil && len(a.cells) >= a.cfg.MaxCells
	a.mu.Unlock()
	switch {
	case old != nil && source == SourceAPI && old.source != SourceAPI:
		return "", fmt.Errorf("%w: %s is defined in the config file %s; edit or remove it there", ErrConflict, reg.Name, old.source)
	case full:
		return "", fmt.Errorf("%w: the agent already announces %d cells, its limit", ErrConflict, a.cfg.MaxCells)
	case old != nil && sameAnnouncement(old.ann, ann):
		a.mu.Lock()
		old.source = source
		a.mu.Unlock()
		return Unchanged, nil
	}
	if old != nil {
		old.an.Stop(ctx)
	}
	an, err := a.n.Announce(ann)
	if err != nil { // prepare checked everything Announce does
		a.mu.Lock()
		delete(a.cells, reg.Name)
		a.mu.Unlock()
		return "", fmt.Errorf("%w: %w", ErrBadRegistration, err)
	}
	a.mu.Lock()
	a.cells[reg.Name] = &cellEntry{reg: reg, ann: ann, source: source, an: an}
	a.mu.Unlock()
	a.hub.poke(reg.Name)
	a.log.Info("cell registered", "cell", reg.Name, "endpoint", reg.Endpoint, "source", source)
	if old != nil {
		return Replaced, nil
	}
	return Created, nil
}

// Deregister stops announcing the cell name and withdraws it, giving up on
// the withdrawal when ctx ends. Cells a config file defines can be
// deregistered only by source; from the API that is ErrConflict.
func (a *Agent) Deregister(ctx context.Context, name, source string) error {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	return a.deregister(ctx, name, source)
}

func (a *Agent) deregister(ctx context.Context, name, source string) error {
	a.mu.Lock()
	e := a.cells[name]
	a.mu.Unlock()
	switch {
	case e == nil:
		return fmt.Errorf("%w: %s", ErrNotRegistered, name)
	case source == SourceAPI && e.source != SourceAPI:
		return fmt.Errorf("%w: %s is defined in the config file %s; remove it there and reload", ErrConflict, name, e.source)
	}
	e.an.Stop(ctx)
	a.mu.Lock()
	delete(a.cells, name)
	a.mu.Unlock()
	a.hub.poke(name)
	a.log.Info("cell deregistered", "cell", name, "source", source)
	return nil
}

// Cells lists the registered cells by name.
func (a *Agent) Cells() []CellInfo {
	// The entries' fields are read under a.mu (register updates a
	// cell's source under it); each announcer's status has its own lock.
	a.mu.Lock()
	entries := slices.Collect(maps.Values(a.cells))
	out := make([]CellInfo, 0, len(entries))
	ans := make([]*Announcer, 0, len(entries))
	for _, e := range entries {
		ci := CellInfo{Name: e.reg.Name, Endpoint: e.reg.Endpoint, Region: e.reg.Region, Manifest: e.reg.Manifest,
			CheckInterval: e.ann.CheckInterval.String(), Source: e.source}
		if d := e.ann.Delegation; d != nil {
			ci.Publisher = base64.StdEncoding.EncodeToString(d.Publisher)
			ci.NotAfter = d.NotAfter
		}
		out = append(out, ci)
		ans = append(ans, e.an)
	}
	a.mu.Unlock()
	for i, an := range ans {
		out[i].Status = an.Status()
	}
	slices.SortFunc(out, func(x, y CellInfo) int { return strings.Compare(x.Name, y.Name) })
	return out
}

// Cell returns the registered cell name.
func (a *Agent) Cell(name string) (CellInfo, bool) {
	for _, c := range a.Cells() {
		if c.Name == name {
			return c, true
		}
	}
	return CellInfo{}, false
}
