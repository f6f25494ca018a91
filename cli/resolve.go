package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/cellnode/cellnode/manifest/project"
	"github.com/cellnode/cellnode/node"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"
)

// SocketDirEnv names the cell socket directory, as the cell SDK reads it.
const SocketDirEnv = "CELL_SOCKET_DIR"

// spawnTimeout is how long a spawned cell has to open its socket.
const spawnTimeout = 5 * time.Second

// socketDir returns $CELL_SOCKET_DIR, else $XDG_RUNTIME_DIR/cell, else
// <tmp>/cell: the cell SDK's default.
func socketDir() string {
	if d := os.Getenv(SocketDirEnv); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "cell")
	}
	return filepath.Join(os.TempDir(), "cell")
}

func resolveCmd(e *env) *cobra.Command {
	var nf netFlags
	var r resolver
	c := &cobra.Command{
		Use:   "resolve [--dir DIR] [--out DIR] [--format json|rust|go] [--offline] [--update]",
		Short: "Resolve a cell's dependencies for its build: endpoints out, Cell.lock updated",
		Long: `Resolve reads Cell.toml and, for each dependency:

  1. uses a cell running on this machine at once: a socket NAME.sock that
     accepts in the cell socket directory ($CELL_SOCKET_DIR);
  2. resolves the tag to a commit through git at the dependency's URL (or
     uses the commit Cell.lock pins, fetched from peers, when the URL cannot
     be reached) and checks the manifest's fingerprint against Cell.lock;
  3. finds the live instances delegated by the manifest's publishers, pings
     them in parallel (500 ms) and ranks them by latency;
  4. applies the policy: if the best instance is slower than max_latency_ms,
     or there is none, auto_spawn builds the cell from source (never a
     downloaded binary), starts it and waits 5 s for its socket; without
     auto_spawn resolve fails and says which rule stopped it.

It then writes NAME_instances.json (or .rs, or .go) into --out and Cell.lock
beside Cell.toml. A failed resolve leaves both as they were. With no
network (or --offline) only cells on this machine resolve.`,
		Example: `  cellnode resolve                               # in a cell's directory
  cellnode resolve --format rust --out "$OUT_DIR"  # from build.rs
  cellnode resolve --format go --out .             # from //go:generate
  cellnode resolve --update                        # accept a moved tag or a new fingerprint`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			switch r.format {
			case "json", "rust", "go":
			default:
				return usageErr("--format %q: want json, rust or go", r.format)
			}
			if r.out == "" {
				r.out = os.Getenv("OUT_DIR")
			}
			if r.out == "" {
				r.out = r.dir
			}
			if r.offline {
				nf.bootstrap = []string{"none"}
			}
			r.e, r.nf = e, &nf
			r.home = nf.home
			if r.home == "" {
				r.home = node.DefaultHome()
			}
			ctx, cancel := context.WithTimeout(c.Context(), r.timeout)
			defer cancel()
			return r.run(ctx)
		},
	}
	nf.add(c.Flags(), false)
	f := c.Flags()
	f.StringVar(&r.dir, "dir", ".", "the cell's directory (Cell.toml, Cell.lock)")
	f.StringVar(&r.out, "out", "", "where to write the endpoint files (default $OUT_DIR, else --dir)")
	f.StringVar(&r.format, "format", "json", "endpoint file format: json, rust or go")
	f.StringVar(&r.goPackage, "package", "main", "Go package name of .go endpoint files")
	f.BoolVar(&r.offline, "offline", false, "do not use the network: only cells on this machine resolve")
	f.BoolVar(&r.update, "update", false, "accept a tag that moved or a fingerprint that changed, and re-pin")
	f.DurationVar(&r.timeout, "timeout", 5*time.Minute, "give up after this long (builds included)")
	return c
}

// resolver holds one resolve run.
type resolver struct {
	e                     *env
	nf                    *netFlags
	dir, out, format      string
	goPackage, home       string
	offline, update       bool
	timeout               time.Duration
	session, cloneSession *session
}

// outcome is what resolving one dependency gave.
type outcome struct {
	locked project.LockedCell
	how    string
}

// resolveLock is the file in the home that serialises resolves sharing it
// (their builds, git caches and spawned cells); spawnLock, in the cell
// socket directory, serialises the spawning of cells there.
const (
	resolveLock = "resolve.lock"
	spawnLock   = ".cellnode-spawn.lock"
)

func (r *resolver) run(ctx context.Context) error {
	if err := safefile.EnsureDir("home", r.home); err != nil {
		return failErr(err)
	}
	unlock, err := lockFile(ctx, filepath.Join(r.home, resolveLock), "another resolve with this home", r.e.stderr)
	if err != nil {
		return failErr(err)
	}
	defer unlock()
	deps, err := project.LoadDeps(r.dir)
	if err != nil {
		return usageErr("%v", err)
	}
	lock, err := project.LoadLock(r.dir)
	if err != nil {
		return usageErr("%v", err)
	}
	defer func() {
		for _, s := range []*session{r.session, r.cloneSession} {
			if s != nil {
				s.close()
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
			return failErr(fmt.Errorf("resolve %s: %w (Cell.lock and the endpoint files are unchanged)", k, err))
		}
		fmt.Fprintf(r.e.stderr, "cellnode: %s → %s (%s)\n", k, strings.Join(endpointsOf(o.locked), ", "), o.how)
		results = append(results, o)
	}
	// Everything resolved: now write, endpoint files first, the lock last.
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return failErr(err)
	}
	for _, o := range results {
		path, content, err := r.render(o.locked)
		if err != nil {
			return failErr(err)
		}
		if err := safefile.WriteFile(path, content, 0o644); err != nil {
			return failErr(err)
		}
	}
	for _, o := range results {
		lock.Put(o.locked)
	}
	if err := project.WriteLock(r.dir, lock); err != nil {
		return failErr(err)
	}
	return nil
}

func (r *resolver) resolveOne(ctx context.Context, k string, d project.Dep, old *project.LockedCell) (outcome, error) {
	locked := project.LockedCell{Name: k, Cell: d.Cell, Git: d.Git, Tag: d.Tag, Resolved: time.Now().UTC().Truncate(time.Second)}
	if old != nil && old.Git == d.Git && old.Tag == d.Tag {
		locked.Cell, locked.Commit, locked.Fingerprint, locked.Publishers = firstNonEmpty(d.Cell, old.Cell), old.Commit, old.Fingerprint, old.Publishers
	}
	// 1. Localhost first: a socket in the cell socket directory, if that
	// directory and the socket are this user's.
	switch ep, lat, ok, err := probeSocket(ctx, k+".sock"); {
	case err != nil:
		fmt.Fprintf(r.e.stderr, "cellnode: %s: not using the socket on this machine: %v\n", k, err)
	case ok:
		locked.Endpoints = []project.LockedEndpoint{{Endpoint: ep, LatencyMS: lat}}
		return outcome{locked, r.localTrust(k, d, old, filepath.Join(socketDir(), k+".sock"))}, nil
	}

	// 2. The manifest at the tag.
	remotes := gitobj.NewRemotes(filepath.Join(r.home, "repos"))
	var commit cid.Cid
	var m *manifest.Manifest
	local := isLocalURL(d.Git)
	h, err := plumbing.ZeroHash, error(nil)
	if !r.offline || local {
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
			if r.offline {
				return outcome{}, fmt.Errorf("offline: only cells running on this machine resolve, %s is not running here (no %s in %s), and Cell.lock pins no commit for it", k, k+".sock", socketDir())
			}
			return outcome{}, fmt.Errorf("%w, and Cell.lock pins no commit for %s to fetch from peers instead", err, k)
		}
		if commit, err = manifest.ParseCID(locked.Commit); err != nil {
			return outcome{}, fmt.Errorf("Cell.lock: %w", err)
		}
		fmt.Fprintf(r.e.stderr, "cellnode: %s: %s cannot be reached; using the commit Cell.lock pins, %s\n", k, d.Git, commit)
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
		return outcome{}, fmt.Errorf("Cell.toml says cell = %q but the manifest at %s names %s", d.Cell, commit, m.Name)
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
	res, err := s.find(ctx, m.Name, node.FindOptions{Publishers: pubs})
	if err != nil {
		return outcome{}, err
	}
	if m.Fingerprint != "" {
		filt, _ := newFilter(m.Fingerprint, "")
		if res, err = filt.apply(ctx, r.e, s, res); err != nil {
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
	fmt.Fprintf(r.e.stderr, "cellnode: %s: %s; building it from source (auto_spawn)\n", k, seen)
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
	info, err := s.manifest(ctx, commit, nil)
	if err != nil {
		if r.offline {
			return nil, fmt.Errorf("offline: only cells running on this machine resolve, and %s is not running here: %w", k, err)
		}
		return nil, err
	}
	return info.Manifest, nil
}

// checkPins holds the resolution to what Cell.lock pinned, unless --update.
func (r *resolver) checkPins(k string, d project.Dep, commit cid.Cid, m *manifest.Manifest, old *project.LockedCell) error {
	if old == nil || r.update || old.Git != d.Git || old.Tag != d.Tag {
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
func (r *resolver) net(ctx context.Context) (*session, error) {
	if r.session == nil {
		s, err := openSession(ctx, r.e, r.nf, true)
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
	src := filepath.Join(r.home, "builds", k+"-"+commit.String())
	if _, err := os.Stat(filepath.Join(src, manifest.FileName)); err != nil {
		os.RemoveAll(src)
		if err := os.MkdirAll(filepath.Dir(src), 0o700); err != nil {
			return project.LockedEndpoint{}, err
		}
		// From the git cache when it has the commit, else from peers.
		err := gitobj.NewRemotes(filepath.Join(r.home, "repos")).Checkout(d.Git, h, src)
		if err != nil {
			os.RemoveAll(src)
			err = r.cloneFromPeers(ctx, commit, res, src)
		}
		if err != nil {
			return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: get the source: %w", err)
		}
	}
	work := filepath.Join(src, m.Build.Dir)
	sockDir := socketDir()
	if err := safefile.EnsureDir("cell socket directory", sockDir); err != nil {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: %w (or set %s to a directory of your own)", err, SocketDirEnv)
	}
	unlock, err := lockFile(ctx, filepath.Join(sockDir, spawnLock), "another resolve spawning a cell in "+sockDir, r.e.stderr)
	if err != nil {
		return project.LockedEndpoint{}, err
	}
	defer unlock()
	sock := m.Build.Socket
	if sock == "" {
		sock = k + ".sock"
	}
	// Another resolve (with another home) may have started it meanwhile.
	if ep, lat, ok, _ := probeSocket(ctx, sock); ok {
		return project.LockedEndpoint{Endpoint: ep, LatencyMS: lat}, nil
	}
	env := append(os.Environ(), SocketDirEnv+"="+sockDir)
	build := exec.CommandContext(ctx, m.Build.Command[0], m.Build.Command[1:]...)
	build.Dir, build.Env = work, env
	if out, err := build.CombinedOutput(); err != nil {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: build of %s failed: %v\n%s", m.Name, err, tail(out, 40))
	}
	if m.Build.Binary == "" {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: the manifest of %s names no binary to start", m.Name)
	}
	logPath := filepath.Join(r.home, "logs", k+".log")
	os.MkdirAll(filepath.Dir(logPath), 0o700)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return project.LockedEndpoint{}, err
	}
	defer logf.Close()
	bin := filepath.Join(work, m.Build.Binary)
	cmd := exec.Command(bin)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = work, env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // outlives resolve, apart from its signals
	if err := cmd.Start(); err != nil {
		return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(spawnTimeout)
	for {
		if ep, lat, ok, _ := probeSocket(ctx, sock); ok {
			writeSpawned(r.home, spawnedCell{Name: k, Cell: m.Name, PID: cmd.Process.Pid, Socket: filepath.Join(sockDir, sock),
				Commit: commit.String(), Version: m.Version, Started: time.Now().UTC(), Log: logPath})
			return project.LockedEndpoint{Endpoint: ep, LatencyMS: lat}, nil
		}
		select {
		case err := <-exited:
			return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: %s exited before opening its socket (%v); its log: %s\n%s", bin, err, logPath, tailFile(logPath))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return project.LockedEndpoint{}, fmt.Errorf("auto_spawn: %s did not open %s within %v; stopped it (log: %s)", bin, filepath.Join(sockDir, sock), spawnTimeout, logPath)
		}
	}
}

func (r *resolver) cloneFromPeers(ctx context.Context, commit cid.Cid, res *node.FindResult, dir string) error {
	if r.cloneSession == nil {
		s, err := openSession(ctx, r.e, r.nf, false)
		if err != nil {
			return err
		}
		r.cloneSession = s
	}
	return r.cloneSession.n.Clone(ctx, commit, node.HintsFor(res, commit), dir)
}

// probeSocket dials name in the cell socket directory. Nothing there is
// not an error; a socket that another user owns, or a directory that is not
// this user's alone, is (another user could serve anything there).
func probeSocket(ctx context.Context, name string) (endpoint string, latencyMS float64, ok bool, err error) {
	path := filepath.Join(socketDir(), name)
	if _, err := os.Lstat(path); err != nil {
		return "", 0, false, nil
	}
	if err := safefile.CheckSocket("cell socket", path); err != nil {
		return "", 0, false, fmt.Errorf("%w (set %s to a directory of your own)", err, SocketDirEnv)
	}
	rtt, err := node.Probe(ctx, "unix:"+path, node.ProbeTimeout)
	if err != nil {
		return "", 0, false, nil
	}
	return "unix://" + name, float64(rtt.Microseconds()) / 1000, true, nil
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
	for _, sc := range readSpawned(r.home) {
		if sc.Name == k && sc.Socket == path && alive(sc.PID) && old.Commit != "" && sc.Commit == old.Commit {
			return "running on this machine, built here from the commit Cell.lock pins"
		}
	}
	var pins []ed25519.PublicKey
	for _, p := range old.Publishers {
		if key, err := record.ParsePublicKey(p); err == nil {
			pins = append(pins, key)
		}
	}
	cell := firstNonEmpty(d.Cell, old.Cell)
	for _, lc := range node.LocalCells(node.DefaultRuntimeDir()) {
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
	eps := endpointsOf(c)
	base := filepath.Join(r.out, c.Name+"_instances")
	switch r.format {
	case "rust":
		q := make([]string, len(eps))
		for i, e := range eps {
			b, _ := json.Marshal(e)
			q[i] = string(b)
		}
		return base + ".rs", []byte("&[" + strings.Join(q, ", ") + "]\n"), nil
	case "go":
		var b bytes.Buffer
		fmt.Fprintf(&b, "// Code generated by cellnode resolve. DO NOT EDIT.\n\npackage %s\n\n", r.goPackage)
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

func endpointsOf(c project.LockedCell) []string {
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

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	return tail(b, 20)
}
