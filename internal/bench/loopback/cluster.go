package loopback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// apiSocket is the local API's socket in a node's home (node.APISocket).
const apiSocket = "api.sock"

// Listen are the --listen flags of every cellnode process: TCP and QUIC,
// like the default, but on loopback only, so that no process dials the
// machine's other addresses.
var Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// StaticBuild is the environment variable with which the benchmarks build
// cellnode: a static binary without cgo, as docs/deploy/Containerfile
// builds the one that is deployed. Its one-shot processes start without
// the dynamic loader and libc: cold finds 0.96× those of the default
// (cgo) build on this package's network (docs/performance.md, session 17).
const StaticBuild = "CGO_ENABLED=0"

// Build compiles ./cmd/cellnode of the module rooted at moduleDir into
// dir/cellnode and returns its path.
func Build(ctx context.Context, moduleDir, dir string) (string, error) {
	bin := filepath.Join(dir, "cellnode")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cellnode")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), StaticBuild)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("loopback: go build ./cmd/cellnode: %w\n%s", err, out)
	}
	return bin, nil
}

// Cluster is a cellnode network of real processes on loopback: one
// `cellnode bootstrap` and the sidecars started with Start. Each process
// has a home and a runtime directory of its own under Dir, and its log
// there. Close stops them all.
type Cluster struct {
	Bin   string   // the cellnode binary
	Dir   string   // where homes, runtime directories and logs go
	Boot  *Proc    // the bootstrap node
	Addrs []string // its loopback multiaddrs, passed as --bootstrap
	// BootAPI reaches the bootstrap's local API (its status).
	BootAPI *http.Client
	// DHTMode, when not "", is passed to every sidecar as --dht-mode.
	DHTMode string
	// RunArgs are more flags for every sidecar (such as --log-level debug).
	RunArgs []string
	// RunEnv, when not nil, gives more environment variables for the
	// sidecar whose home is home (such as a CPU profile's path).
	RunEnv func(home string) []string

	mu       sync.Mutex
	seq      int
	sidecars []*Sidecar
}

// NewCluster starts a bootstrap node and waits until it has printed its
// addresses.
func NewCluster(ctx context.Context, bin, dir string) (*Cluster, error) {
	c := &Cluster{Bin: bin, Dir: dir}
	home := c.newDir("boot")
	args := []string{"bootstrap", "--home", home}
	for _, l := range Listen {
		args = append(args, "--listen", l)
	}
	p, err := StartProc("bootstrap", bin, args, []string{"CELLNODE_RUNTIME_DIR=" + c.newDir("rt-boot")}, filepath.Join(dir, "bootstrap.log"))
	if err != nil {
		return nil, err
	}
	c.Boot = p
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// One address per --listen, printed one after the other.
	seen := 0
	if _, err := p.WaitLine(wctx, func(l string) bool {
		if strings.Contains(l, "/p2p/") {
			seen++
		}
		return seen == len(Listen)
	}); err != nil {
		p.Stop(time.Second)
		return nil, fmt.Errorf("%w\n%s", err, p.Tail(2000))
	}
	if err := waitSocket(wctx, filepath.Join(home, apiSocket), p); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	if c.Addrs, err = BootstrapAddrs(p.Lines()); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	c.BootAPI = unixClient(filepath.Join(home, apiSocket))
	return c, nil
}

// newDir makes a fresh directory (mode 0700) under c.Dir.
func (c *Cluster) newDir(prefix string) string {
	c.mu.Lock()
	c.seq++
	n := c.seq
	c.mu.Unlock()
	d := filepath.Join(c.Dir, fmt.Sprintf("%s-%d", prefix, n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		panic(err) // the benchmark's own temporary directory
	}
	return d
}

// Sidecar is one `cellnode run` and the service it announces: a TCP
// listener on 127.0.0.1 that accepts and closes connections.
type Sidecar struct {
	Proc     *Proc
	Name     string // the cell
	Home     string
	Endpoint string // 127.0.0.1:PORT, as announced
	ln       net.Listener
	api      *http.Client
}

// Start starts a service and a `cellnode run` announcing it as name, with
// default flags but --home, --bootstrap and --listen (see Listen), and
// --dht-mode when c.DHTMode is set. It
// returns once the process is started, before it is ready: see WaitAPI,
// and Finder.WaitListed for when it is findable.
func (c *Cluster) Start(name string) (*Sidecar, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loopback: service listener: %w", err)
	}
	go serve(ln)
	home := c.newDir("home")
	s := &Sidecar{Name: name, Home: home, Endpoint: ln.Addr().String(), ln: ln,
		api: unixClient(filepath.Join(home, apiSocket))}
	args := []string{"run", "--name", name, "--endpoint", s.Endpoint, "--home", home}
	for _, a := range c.Addrs {
		args = append(args, "--bootstrap", a)
	}
	for _, l := range Listen {
		args = append(args, "--listen", l)
	}
	if c.DHTMode != "" {
		args = append(args, "--dht-mode", c.DHTMode)
	}
	args = append(args, c.RunArgs...)
	env := []string{"CELLNODE_RUNTIME_DIR=" + c.newDir("rt")}
	if c.RunEnv != nil {
		env = append(env, c.RunEnv(home)...)
	}
	p, err := StartProc("run "+filepath.Base(home), c.Bin, args, env, home+".log")
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.Proc = p
	c.mu.Lock()
	c.sidecars = append(c.sidecars, s)
	c.mu.Unlock()
	return s, nil
}

// serve accepts and closes connections until ln is closed: a service that
// answers a health check or a ping with a completed TCP handshake.
func serve(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		conn.Close()
	}
}

// CloseService stops the sidecar's service (its listener).
func (s *Sidecar) CloseService() { s.ln.Close() }

// WaitAPI waits until the sidecar's local API accepts connections.
func (s *Sidecar) WaitAPI(ctx context.Context) error {
	return waitSocket(ctx, filepath.Join(s.Home, apiSocket), s.Proc)
}

// Find asks the sidecar's node, through its local API, for the instances
// of name, as `cellnode find` does when a node runs on the machine.
func (s *Sidecar) Find(ctx context.Context, name string) (*FindResult, error) {
	return s.find(ctx, name, false)
}

// FindFresh is Find with "Cache-Control: no-cache": the node runs a find of
// its own instead of answering from its last result, so what it lists is
// what the network holds now.
func (s *Sidecar) FindFresh(ctx context.Context, name string) (*FindResult, error) {
	return s.find(ctx, name, true)
}

func (s *Sidecar) find(ctx context.Context, name string, fresh bool) (*FindResult, error) {
	q := url.Values{"name": {name}}
	if dl, ok := ctx.Deadline(); ok {
		q.Set("timeout", time.Until(dl).String())
	}
	b, h, err := get(ctx, s.api, "/v1/find?"+q.Encode(), fresh)
	if err != nil {
		return nil, err
	}
	r, err := DecodeFind(b)
	if err != nil {
		return nil, err
	}
	r.Served, r.Age = ServedBy(h)
	return r, nil
}

// Status asks the sidecar's node for its status.
func (s *Sidecar) Status(ctx context.Context) (*Status, error) { return status(ctx, s.api) }

// BootStatus asks the bootstrap node for its status.
func (c *Cluster) BootStatus(ctx context.Context) (*Status, error) { return status(ctx, c.BootAPI) }

func status(ctx context.Context, hc *http.Client) (*Status, error) {
	b, _, err := get(ctx, hc, "/v1/status", false)
	if err != nil {
		return nil, err
	}
	return DecodeStatus(b)
}

// ColdFind runs `cellnode find name --bootstrap ADDR... --home FRESH
// --json` (a fresh process, fresh home and runtime directory, so it has
// no node to use and no cell on this machine) and returns how long the
// process took, from start to exit, and its answer.
func (c *Cluster) ColdFind(ctx context.Context, name string) (time.Duration, *FindResult, error) {
	return c.ColdFindWith(ctx, c.Bin, name)
}

// ColdFindWith is ColdFind with another cellnode binary than the
// network's (the pair benchmark's second binary).
func (c *Cluster) ColdFindWith(ctx context.Context, bin, name string) (time.Duration, *FindResult, error) {
	args := []string{"find", name, "--home", c.newDir("find"), "--json"}
	for _, a := range c.Addrs {
		args = append(args, "--bootstrap", a)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv([]string{"CELLNODE_RUNTIME_DIR=" + c.newDir("rt-find")})
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, nil, fmt.Errorf("loopback: cellnode find: %w\n%s", err, stderr.String())
	}
	res, err := DecodeFind([]byte(stdout.String()))
	return d, res, err
}

// Close stops every sidecar (SIGTERM, then SIGKILL after 5 s) and the
// bootstrap, and closes the services.
func (c *Cluster) Close() {
	c.mu.Lock()
	ss := append([]*Sidecar(nil), c.sidecars...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			s.Proc.Stop(5 * time.Second)
			s.ln.Close()
		})
	}
	wg.Wait()
	if c.Boot != nil {
		c.Boot.Stop(5 * time.Second)
	}
}

// Kill ends the sidecar with SIGKILL (no withdrawal) and closes its
// service: a host that crashed.
func (s *Sidecar) Kill() {
	_ = s.Proc.Signal(syscall.SIGKILL)
	<-s.Proc.Done()
	s.ln.Close()
}

// unixClient is an HTTP client whose every connection goes to the unix
// socket at path. It keeps connections alive, as node.Client does.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 4,
	}}
}

// get returns the body and the headers of a 200 answer to GET path.
func get(ctx context.Context, hc *http.Client, path string, noCache bool) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://cellnode"+path, nil)
	if err != nil {
		return nil, nil, err
	}
	if noCache {
		req.Header.Set("Cache-Control", "no-cache")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("loopback: local API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("loopback: local API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("loopback: local API %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, resp.Header, nil
}

// waitSocket polls until the unix socket at path accepts a connection, p
// exits or ctx ends.
func waitSocket(ctx context.Context, path string, p *Proc) error {
	for {
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("loopback: %s exited before serving %s\n%s", p.Name, path, p.Tail(2000))
		case <-ctx.Done():
			return fmt.Errorf("loopback: %s: waiting for %s: %w", p.Name, path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
