package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cellnode/cellnode/dht/record"
)

// ErrConfig is wrapped by the errors of a config directory that cannot be
// used (NewAgent, Reload).
var ErrConfig = errors.New("node: bad config directory")

// MaxConfigFile is the largest config file the agent reads.
const MaxConfigFile = 1 << 20

// ConfigFile is one file of the agent's config directory: a JSON object
// with the cells to announce and the publishers to trust (docs/api.md,
// "Config directory"). Files are read in name order; only *.json files
// count.
type ConfigFile struct {
	Cells []Registration `json:"cells"`
	// Trust maps a cell name to the publisher keys (hex or base64) that
	// DNS answers and watches trust for it, as `find --publisher` does:
	// only instances those keys delegated are served.
	Trust map[string][]string `json:"trust"`
}

// Definitions is what a config directory defines, checked.
type Definitions struct {
	Cells map[string]definedCell         // by cell name
	Trust map[string][]ed25519.PublicKey // by cell name
}

type definedCell struct {
	reg  Registration
	ann  Announcement
	file string
}

// loadConfigDir reads every *.json file of dir and checks it whole: a
// file that does not parse, an unknown field, a bad registration, a cell
// defined twice or a bad publisher key is an error naming the file, and
// nothing of the directory is used. A missing directory is an error; an
// empty one defines nothing.
func (a *Agent) loadConfigDir(dir string) (*Definitions, error) {
	defs := &Definitions{Cells: map[string]definedCell{}, Trust: map[string][]ed25519.PublicKey{}}
	if dir == "" {
		return defs, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := a.loadConfigFile(path, defs); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
		}
	}
	return defs, nil
}

func (a *Agent) loadConfigFile(path string, defs *Definitions) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigFile+1))
	if err != nil {
		return err
	}
	if len(b) > MaxConfigFile {
		return fmt.Errorf("larger than %d bytes", MaxConfigFile)
	}
	var cf ConfigFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cf); err != nil {
		return fmt.Errorf("%w (want {\"cells\": [...], \"trust\": {...}})", err)
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	for i, reg := range cf.Cells {
		if reg.DelegationFile != "" {
			if reg.Delegation != "" {
				return fmt.Errorf("cells[%d] (%s): both delegation and delegation_file", i, reg.Name)
			}
			p := reg.DelegationFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(path), p)
			}
			d, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("cells[%d] (%s): delegation_file: %w", i, reg.Name, err)
			}
			reg.Delegation = string(d)
		}
		ann, err := a.prepare(reg)
		if err != nil {
			return fmt.Errorf("cells[%d]: %w", i, err)
		}
		if prev, ok := defs.Cells[reg.Name]; ok {
			return fmt.Errorf("cells[%d]: %s is defined in %s too", i, reg.Name, prev.file)
		}
		defs.Cells[reg.Name] = definedCell{reg: reg, ann: ann, file: path}
	}
	for name, keys := range cf.Trust {
		if _, err := record.ParseName(name); err != nil {
			return fmt.Errorf("trust: %w", err)
		}
		if _, ok := defs.Trust[name]; ok {
			return fmt.Errorf("trust: %s is trusted in another file too", name)
		}
		if len(keys) == 0 {
			return fmt.Errorf("trust: %s lists no publisher key", name)
		}
		var pubs []ed25519.PublicKey
		for _, k := range keys {
			pub, err := record.ParsePublicKey(k)
			if err != nil {
				return fmt.Errorf("trust: %s: %w", name, err)
			}
			pubs = append(pubs, pub)
		}
		defs.Trust[name] = pubs
	}
	return nil
}

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Created, Replaced, Removed, Unchanged []string // cell names
	Trusted                               int      // cells with pinned publishers
}

func (r ReloadResult) String() string {
	return fmt.Sprintf("%d created, %d replaced, %d removed, %d unchanged; %d cells pinned",
		len(r.Created), len(r.Replaced), len(r.Removed), len(r.Unchanged), r.Trusted)
}

// Reload reads the config directory again (what SIGHUP does) and makes
// the registered cells match it: cells a file defines are registered or
// replaced, cells that came from a file that no longer defines them are
// deregistered, cells registered through the API are left alone unless a
// file now defines them (the file wins). A directory with any error
// changes nothing and returns the error.
func (a *Agent) Reload(ctx context.Context) (ReloadResult, error) {
	defs, err := a.loadConfigDir(a.cfg.ConfigDir)
	if err != nil {
		return ReloadResult{}, err
	}
	a.startOnce.Do(func() { a.defs = nil }) // a reload before Bootstrap replaces what NewAgent read
	a.opMu.Lock()
	defer a.opMu.Unlock()
	return a.apply(ctx, defs)
}

// apply makes the agent's cells and trust match defs; opMu is held.
func (a *Agent) apply(ctx context.Context, defs *Definitions) (ReloadResult, error) {
	var res ReloadResult
	a.mu.Lock()
	var gone []string
	for name, e := range a.cells {
		if _, ok := defs.Cells[name]; !ok && e.source != SourceAPI {
			gone = append(gone, name)
		}
	}
	a.trust = defs.Trust
	a.mu.Unlock()
	res.Trusted = len(defs.Trust)
	slices.Sort(gone)
	var errs []error
	for _, name := range gone {
		if err := a.deregister(ctx, name, ""); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Removed = append(res.Removed, name)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range defs.Cells {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		d := defs.Cells[name]
		r, err := a.register(ctx, d.reg, d.ann, d.file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch r {
		case Created:
			res.Created = append(res.Created, name)
		case Replaced:
			res.Replaced = append(res.Replaced, name)
		default:
			res.Unchanged = append(res.Unchanged, name)
		}
	}
	a.hub.retrust()
	return res, errors.Join(errs...)
}
