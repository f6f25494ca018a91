// Package resolve resolves a cell's dependencies for its build, as
// `cellnode resolve` does: for each dependency in Cell.toml, a cell running
// on this machine (a socket in the cell socket directory), else the
// manifest at the dependency's tag (through git, or the commit Cell.lock
// pins fetched from peers) checked against Cell.lock's pins, then the live
// instances delegated by the manifest's publishers ranked by latency, then
// the policy (max_latency_ms, auto_spawn: build from source and start with
// package spawn). It writes the endpoint files and Cell.lock only when every
// dependency resolved.
//
// Session is how a one-shot command reaches the network (the node on this
// machine, or an ephemeral one); Filter keeps instances by manifest
// fingerprint and version. Run is safe to call from several processes at
// once: resolves sharing a home wait for each other.
package resolve

import (
	"bytes"
	"cmp"
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
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/progress"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/spawn"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/ipfs/go-cid"
)

// Config is one resolve. Its zero value resolves ./Cell.toml into JSON
// endpoint files beside it, with the default home, and fails at any step
// that needs the network (Open is nil).
type Config struct {
	// Dir is the cell's directory (Cell.toml, Cell.lock); "" means ".".
	Dir string
	// Out is where the endpoint files go; "" means Dir.
	Out string
	// Format of the endpoint files: "json" (or ""), "rust" or "go".
	Format string
	// GoPackage is the package name of .go endpoint files; "" means main.
	GoPackage string
	// Home is the state directory (git caches, builds, logs, the cells
	// started); "" means dirs.Home().
	Home string
	// Offline uses no network: only cells on this machine (and
	// dependencies at local git URLs) resolve.
	Offline bool
	// Update accepts a tag that moved or a fingerprint that changed, and
	// re-pins.
	Update bool
	// Open opens the session for finds and manifest fetches (local true:
	// the node running on this machine may answer) and for clones from
	// peers (local false), on first use. nil: no network.
	Open func(ctx context.Context, local bool) (*Session, error)
	// Log is told one line per dependency resolved, and warnings; nil
	// discards.
	Log io.Writer
	// Progress shows builds and clones while they run, when it is a
	// terminal (internal/progress); nil shows nothing.
	Progress io.Writer
}

// InputError is returned by Run for a Cell.toml or Cell.lock that does not
// load, or a Config field that is not valid: the caller's input, not the
// network or the machine.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// resolveLock is the file in the home that serialises resolves sharing it
// (their builds, git caches and spawned cells).
const resolveLock = "resolve.lock"

// Run resolves every dependency of cfg.Dir's Cell.toml, in name order, then
// writes the endpoint files and, last, Cell.lock. A failed resolve leaves
// both as they were.
func Run(ctx context.Context, cfg Config) error {
	r := &resolver{Config: cfg}
	if r.Dir == "" {
		r.Dir = "."
	}
	if r.Out == "" {
		r.Out = r.Dir
	}
	if r.GoPackage == "" {
		r.GoPackage = "main"
	}
	if r.Home == "" {
		r.Home = dirs.Home()
	}
	if r.Log == nil {
		r.Log = io.Discard
	}
	switch r.Format {
	case "":
		r.Format = "json"
	case "json", "rust", "go":
	default:
		return &InputError{fmt.Errorf("format %q: want json, rust or go", r.Format)}
	}
	return r.run(ctx)
}

// resolver holds one resolve run.
type resolver struct {
	Config
	session, cloneSession *Session
}

// outcome is what resolving one dependency gave.
type outcome struct {
	locked project.LockedCell
	how    string
}

func (r *resolver) run(ctx context.Context) error {
	if err := dirs.Ensure("home", r.Home); err != nil {
		return err
	}
	unlock, err := spawn.Lock(ctx, filepath.Join(r.Home, resolveLock), "another resolve with this home", r.Log)
	if err != nil {
		return err
	}
	defer unlock()
	deps, err := project.LoadDeps(r.Dir)
	if err != nil {
		return &InputError{err}
	}
	lock, err := project.LoadLock(r.Dir)
	if err != nil {
		return &InputError{err}
	}
	defer func() {
		for _, s := range []*Session{r.session, r.cloneSession} {
			if s != nil {
				s.Close()
			}
		}
	}()
	names := make([]string, 0, len(deps.Cells))
	for k := range deps.Cells {
		names = append(names, k)
	}
	slices.Sort(names)
	var results []outcome
	for _, k := range names {
		o, err := r.resolveOne(ctx, k, deps.Cells[k], lock.Get(k))
		if err != nil {
			return fmt.Errorf("resolve %s: %w (Cell.lock and the endpoint files are unchanged)", k, err)
		}
		fmt.Fprintf(r.Log, "cellnode: %s → %s (%s)\n", k, strings.Join(EndpointsOf(o.locked), ", "), o.how)
		results = append(results, o)
	}
	// Everything resolved: now write, endpoint files first, the lock last.
	if err := os.MkdirAll(r.Out, 0o755); err != nil {
		return err
	}
	for _, o := range results {
		path, content, err := r.render(o.locked)
		if err != nil {
			return err
		}
		if err := safefile.WriteFile(path, content, 0o644); err != nil {
			return err
		}
	}
	for _, o := range results {
		lock.Put(o.locked)
	}
	return project.WriteLock(r.Dir, lock)
}

func (r *resolver) resolveOne(ctx context.Context, k string, d project.Dep, old *project.LockedCell) (outcome, error) {
	locked := project.LockedCell{Name: k, Cell: d.Cell, Git: d.Git, Tag: d.Tag, Resolved: time.Now().UTC().Truncate(time.Second)}
	if old != nil && old.Git == d.Git && old.Tag == d.Tag {
		locked.Cell, locked.Commit, locked.Fingerprint, locked.Publishers = cmp.Or(d.Cell, old.Cell), old.Commit, old.Fingerprint, old.Publishers
	}
	// 1. Localhost first: a socket in the cell socket directory, if that
	// directory and the socket are this user's.
	switch ep, lat, ok, err := spawn.Probe(ctx, k+".sock"); {
	case err != nil:
		fmt.Fprintf(r.Log, "cellnode: %s: not using the socket on this machine: %v\n", k, err)
	case ok:
		locked.Endpoints = []project.LockedEndpoint{{Endpoint: ep, LatencyMS: lat}}
		return outcome{locked, r.localTrust(k, d, old, filepath.Join(dirs.Socket(), k+".sock"))}, nil
	}

	// 2. The manifest at the tag.
	remotes := gitobj.NewRemotes(filepath.Join(r.Home, ReposDir))
	var commit cid.Cid
	var m *manifest.Manifest
	local := isLocalURL(d.Git)
	h, err := plumbing.ZeroHash, error(nil)
	if !r.Offline || local {
		h, err = remotes.Resolve(ctx, d.Git, d.Tag)
	} else {
		err = fmt.Errorf("%w: offline", gitobj.ErrUnreachable)
	}
	switch {
	case err == nil:
		commit = manifest.CIDOf(h)
		if m, err = remotes.Manifest(d.Git, h); err != nil {
			return outcome{}, err
		}
	case errors.Is(err, gitobj.ErrUnreachable):
		if locked.Commit == "" {
			if r.Offline {
				return outcome{}, fmt.Errorf("offline: only cells running on this machine resolve, %s is not running here (no %s in %s), and Cell.lock pins no commit for it", k, k+".sock", dirs.Socket())
			}
			return outcome{}, fmt.Errorf("%w, and Cell.lock pins no commit for %s to fetch from peers instead", err, k)
		}
		if commit, err = manifest.ParseCID(locked.Commit); err != nil {
			return outcome{}, fmt.Errorf("the commit Cell.lock pins for %s: %w", k, err)
		}
		fmt.Fprintf(r.Log, "cellnode: %s: %s cannot be reached; using the commit Cell.lock pins, %s\n", k, d.Git, commit)
		h, _ = manifest.HashOf(commit)
		if m, err = remotes.Manifest(d.Git, h); err != nil { // not in the local cache: from peers
			m, err = r.manifestFromPeers(ctx, k, commit)
			if err != nil {
				return outcome{}, err
			}
		}
	default:
		return outcome{}, err
	}
	if d.Cell != "" && d.Cell != m.Name {
		return outcome{}, fmt.Errorf("the manifest at %s names %s, but Cell.toml says cell = %q", commit, m.Name, d.Cell)
	}
	if err := r.checkPins(k, d, commit, m, old); err != nil {
		return outcome{}, err
	}
	locked.Cell, locked.Commit, locked.Fingerprint, locked.Publishers = m.Name, commit.String(), m.Fingerprint, m.Publishers

	// 3. Live instances, trusted publishers only.
	var pubs []ed25519.PublicKey
	for _, p := range m.Publishers {
		k, err := record.ParsePublicKey(p)
		if err != nil {
			return outcome{}, fmt.Errorf("manifest publishers: %w", err)
		}
		pubs = append(pubs, k)
	}
	s, err := r.net(ctx)
	if err != nil {
		return outcome{}, err
	}
	res, err := s.Find(ctx, m.Name, node.FindOptions{Publishers: pubs})
	if err != nil {
		return outcome{}, err
	}
	if m.Fingerprint != "" {
		filt, _ := NewFilter(m.Fingerprint, "")
		if res, err = filt.Apply(ctx, s, res); err != nil {
			return outcome{}, err
		}
	}
	var seen string
	var eps []project.LockedEndpoint
	for _, in := range res.Instances {
		if !in.Reachable {
			continue
		}
		if d.MaxLatencyMS > 0 && in.LatencyMS > float64(d.MaxLatencyMS) {
			if seen == "" {
				seen = fmt.Sprintf("the best instance answers in %.1f ms, over max_latency_ms = %d", in.LatencyMS, d.MaxLatencyMS)
			}
			continue
		}
		eps = append(eps, project.LockedEndpoint{Endpoint: in.Best, LatencyMS: in.LatencyMS})
	}
	if len(eps) > 0 {
		locked.Endpoints = eps
		how := fmt.Sprintf("%d live instance(s)", len(eps))
		if len(pubs) == 0 {
			how += ", open cell: no publishers to verify against"
		}
		return outcome{locked, how}, nil
	}
	switch {
	case seen != "":
	case res.Offline:
		seen = "offline: no peer of the cell network answered, so only cells on this machine can resolve"
	case len(res.Instances) > 0:
		seen = fmt.Sprintf("%d instance(s) found, none reachable", len(res.Instances))
	default:
		seen = "no live instance found"
		if res.Untrusted > 0 {
			seen += fmt.Sprintf(" (%d untrusted instance(s) ignored)", res.Untrusted)
		}
	}

	// 4. Policy.
	if !d.AutoSpawn {
		return outcome{}, fmt.Errorf("%s, and auto_spawn is off for %s", seen, k)
	}
	fmt.Fprintf(r.Log, "cellnode: %s: %s; building it from source (auto_spawn)\n", k, seen)
	ep, err := r.spawn(ctx, k, d, commit, h, m, res)
	if err != nil {
		return outcome{}, err
	}
	locked.Endpoints = []project.LockedEndpoint{ep}
	return outcome{locked, "built from source and started here"}, nil
}

// manifestFromPeers fetches the manifest of commit from the network,
// checking every object's hash.
func (r *resolver) manifestFromPeers(ctx context.Context, k string, commit cid.Cid) (*manifest.Manifest, error) {
	s, err := r.net(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.ManifestInfo(ctx, commit, nil)
	if err != nil {
		if r.Offline {
			return nil, fmt.Errorf("offline: only cells running on this machine resolve, and %s is not running here: %w", k, err)
		}
		return nil, err
	}
	return info.Manifest, nil
}

// checkPins holds the resolution to what Cell.lock pinned, unless --update.
func (r *resolver) checkPins(k string, d project.Dep, commit cid.Cid, m *manifest.Manifest, old *project.LockedCell) error {
	if old == nil || r.Update || old.Git != d.Git || old.Tag != d.Tag {
		return nil
	}
	if old.Commit != "" && old.Commit != commit.String() {
		return fmt.Errorf("tag %q of %s now names commit %s, but Cell.lock pins %s; run with --update to accept it", d.Tag, d.Git, commit, old.Commit)
	}
	if old.Fingerprint != "" && old.Fingerprint != m.Fingerprint {
		return fmt.Errorf("the fingerprint of %s changed from %s (Cell.lock) to %s; the interface is not the one you built against (run with --update to accept it)", k, old.Fingerprint, dash(m.Fingerprint))
	}
	return nil
}

// net returns the session used for finds and manifest fetches, opening it
// on first use.
func (r *resolver) net(ctx context.Context) (*Session, error) {
	if r.session == nil {
		if r.Open == nil {
			return nil, errors.New("resolve: no network configured")
		}
		s, err := r.Open(ctx, true)
		if err != nil {
			return nil, err
		}
		r.session = s
	}
	return r.session, nil
}

// spawn builds the dependency from source at the commit (from the git URL,
// or cloned from peers when it cannot be reached), starts it with
// CELL_SOCKET_DIR set, and waits for its socket.
func (r *resolver) spawn(ctx context.Context, k string, d project.Dep, commit cid.Cid, h plumbing.Hash, m *manifest.Manifest, res *node.FindResult) (project.LockedEndpoint, error) {
	if m.Build == nil {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: the manifest of %s has no build section", m.Name)
	}
	src := filepath.Join(r.Home, BuildsDir, k+"-"+commit.String())
	if _, err := os.Stat(filepath.Join(src, manifest.FileName)); err != nil {
		os.RemoveAll(src)
		if err := os.MkdirAll(filepath.Dir(src), 0o700); err != nil {
			return project.LockedEndpoint{}, err
		}
		// From the git cache when it has the commit, else from peers.
		err := gitobj.NewRemotes(filepath.Join(r.Home, ReposDir)).Checkout(d.Git, h, src)
		if err != nil {
			os.RemoveAll(src)
			err = r.cloneFromPeers(ctx, commit, res, src)
		}
		if err != nil {
			return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: get the source: %w", err)
		}
	}
	ep, lat, err := spawn.Start(ctx, spawn.Spec{Name: k, Manifest: m, Commit: commit.String(), Src: src, Home: r.Home,
		Progress: r.Progress, Log: r.Log})
	if err != nil {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: %w", err)
	}
	return project.LockedEndpoint{Endpoint: ep, LatencyMS: lat}, nil
}

func (r *resolver) cloneFromPeers(ctx context.Context, commit cid.Cid, res *node.FindResult, dir string) error {
	if r.cloneSession == nil {
		if r.Open == nil {
			return errors.New("resolve: no network configured")
		}
		s, err := r.Open(ctx, false)
		if err != nil {
			return err
		}
		r.cloneSession = s
	}
	bar := progress.Spinner(r.Progress, "cloning "+commit.String()+" from peers")
	defer bar.Done()
	return r.cloneSession.Clone(ctx, commit, node.HintsFor(res, commit), dir)
}

// localTrust says whether the cell answering on the local socket path is
// tied to what Cell.lock pins for dependency k, as a remote instance must
// be: resolve built and started it from the pinned commit, or a node on
// this machine announces it under a delegation from a pinned publisher.
// Otherwise it says plainly that the socket was not verified.
func (r *resolver) localTrust(k string, d project.Dep, old *project.LockedCell, path string) string {
	if old == nil || (old.Commit == "" && len(old.Publishers) == 0) {
		return "running on this machine; not verified: Cell.lock pins nothing for it yet"
	}
	for _, sc := range spawn.List(r.Home) {
		if sc.Name == k && sc.Socket == path && spawn.Alive(sc.PID) && old.Commit != "" && sc.Commit == old.Commit {
			return "running on this machine, built here from the commit Cell.lock pins"
		}
	}
	var pins []ed25519.PublicKey
	for _, p := range old.Publishers {
		if key, err := record.ParsePublicKey(p); err == nil {
			pins = append(pins, key)
		}
	}
	cell := cmp.Or(d.Cell, old.Cell)
	for _, lc := range node.LocalCells(dirs.Runtime()) {
		if cell != "" && lc.Name != cell {
			continue
		}
		rec, err := record.Verify(lc.Record, lc.Name, time.Now())
		if err != nil || rec.Withdrawn || !slices.Contains(rec.Endpoints, "unix:"+path) {
			continue
		}
		if pub := rec.Publisher(); pub != nil && slices.ContainsFunc(pins, func(p ed25519.PublicKey) bool { return p.Equal(pub) }) {
			return fmt.Sprintf("running on this machine, announced by %s under a delegation from a publisher Cell.lock pins", shortPeer(rec.Peer.String()))
		}
	}
	return "running on this machine; NOT verified: nothing ties this socket to the publishers or the commit Cell.lock pins (it is yours, in your socket directory)"
}

// render returns the endpoint file of one dependency in the chosen format.
func (r *resolver) render(c project.LockedCell) (string, []byte, error) {
	eps := EndpointsOf(c)
	base := filepath.Join(r.Out, c.Name+"_instances")
	switch r.Format {
	case "rust":
		q := make([]string, len(eps))
		for i, e := range eps {
			b, _ := json.Marshal(e)
			q[i] = string(b)
		}
		return base + ".rs", []byte("&[" + strings.Join(q, ", ") + "]\n"), nil
	case "go":
		var b bytes.Buffer
		fmt.Fprintf(&b, "// Code generated by cellnode resolve. DO NOT EDIT.\n\npackage %s\n\n", r.GoPackage)
		fmt.Fprintf(&b, "// %sInstances are the endpoints of %s, best first.\nvar %sInstances = []string{", goIdent(c.Name), c.Cell, goIdent(c.Name))
		for i, e := range eps {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", e)
		}
		b.WriteString("}\n")
		return base + ".go", b.Bytes(), nil
	}
	out, err := json.MarshalIndent(map[string]any{"name": c.Name, "cell": c.Cell, "commit": c.Commit, "endpoints": eps}, "", "  ")
	return base + ".json", append(out, '\n'), err
}

// EndpointsOf returns the endpoints of c, best first.
func EndpointsOf(c project.LockedCell) []string {
	out := make([]string, len(c.Endpoints))
	for i, e := range c.Endpoints {
		out[i] = e.Endpoint
	}
	return out
}

// goIdent turns a dependency name into an exported Go identifier prefix.
func goIdent(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '-' || r == '.' || r == '_' {
			up = true
			continue
		}
		if up && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		}
		up = false
		b.WriteRune(r)
	}
	if out := b.String(); out != "" && out[0] >= '0' && out[0] <= '9' {
		return "Cell" + out
	}
	return b.String()
}

func isLocalURL(u string) bool {
	return strings.HasPrefix(u, "file://") || strings.HasPrefix(u, "/") || strings.HasPrefix(u, ".")
}

// shortPeer abbreviates a peer ID for a message.
func shortPeer(p string) string {
	if len(p) > 16 {
		return p[:8] + "…" + p[len(p)-6:]
	}
	return p
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
