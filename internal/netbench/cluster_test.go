package netbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cellnode/cellnode/internal/poll"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/delaynet"
	"github.com/cellnode/cellnode/node"
)

// servicePort is where every sidecar's tiny TCP service listens, in its
// own namespace.
const servicePort = 7000

// cluster is a delaynet network with cellnode processes in its namespaces.
type cluster struct {
	tb   testing.TB
	bin  string // the cellnode binary
	dir  string // homes, runtime directories, logs
	net  *delaynet.Network
	boot []string // the bootstrap node's multiaddrs on its 10.77 address

	mu    sync.Mutex
	procs []*proc
	trace map[int]*traceLog // packets to and from these node indexes
}

// proc is one cellnode process.
type proc struct {
	nd      *delaynet.Node
	home    string
	runtime string
	log     string // stdout and stderr
	cmd     *exec.Cmd
	start   time.Time
	done    chan struct{} // closed when it has exited
	err     error         // its exit, once done is closed
	service net.Listener  // the sidecar's service, if any
	cell    string        // the cell it announces, if any
}

func newCluster(tb testing.TB, bin string) *cluster {
	c := &cluster{tb: tb, bin: bin, trace: map[int]*traceLog{}}
	var err error
	if c.dir, err = os.MkdirTemp("", "netbench-"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if os.Getenv("CELLNODE_NETBENCH_KEEP") != "" {
			tb.Logf("logs and homes kept in %s", c.dir)
			return
		}
		os.RemoveAll(c.dir)
	})
	c.net, err = delaynet.New(delaynet.Config{Trace: c.onPacket})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		c.killAll()
		if err := c.net.Close(); err != nil {
			tb.Errorf("delete namespaces: %v", err)
		}
	})
	return c
}

func (c *cluster) rtt() time.Duration { return 2 * c.net.Delay() }

// add makes n more node namespaces.
func (c *cluster) add(n int) []*delaynet.Node {
	var out []*delaynet.Node
	for range n {
		nd, err := c.net.Add()
		if err != nil {
			c.tb.Fatal(err)
		}
		out = append(out, nd)
	}
	return out
}

// env is the environment of every cellnode process: nothing of ours but a
// PATH, a HOME of its own and its runtime directory; CELLNODE_BOOTSTRAP
// points at the benchmark's bootstrap node once it runs, so that nothing
// ever falls back to the default public bootstrap address.
func (c *cluster) env(runtime string) []string {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + c.dir, node.RuntimeDirEnv + "=" + runtime}
	if len(c.boot) > 0 {
		env = append(env, "CELLNODE_BOOTSTRAP="+strings.Join(c.boot, ","))
	} else {
		env = append(env, "CELLNODE_BOOTSTRAP=none")
	}
	return env
}

// workDir returns an empty directory for a process to run in: run's --dir
// and find's --lock default to the working directory, and the benchmark's
// own is inside this repository (a git repository with no Cell.json).
func (c *cluster) workDir(tag string) string {
	d := filepath.Join(c.dir, tag+".cwd")
	if err := os.MkdirAll(d, 0o700); err != nil {
		c.tb.Fatal(err)
	}
	return d
}

// start starts `cellnode args...` in nd's namespace with home and runtime
// directories of its own (named by tag, created fresh unless they exist).
func (c *cluster) start(nd *delaynet.Node, tag string, args ...string) *proc {
	p := &proc{nd: nd, home: filepath.Join(c.dir, tag, "home"), runtime: filepath.Join(c.dir, tag, "run"),
		log: filepath.Join(c.dir, tag+".log"), done: make(chan struct{})}
	for _, d := range []string{p.home, p.runtime} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			c.tb.Fatal(err)
		}
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.tb.Fatal(err)
	}
	p.cmd = exec.Command(c.bin, append(args, "--home", p.home)...)
	p.cmd.Env = c.env(p.runtime)
	p.cmd.Dir = c.workDir(tag)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.start = time.Now()
	if err := nd.Start(p.cmd); err != nil {
		f.Close()
		c.tb.Fatalf("start %v: %v", args, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

// kill SIGKILLs a process by its PID and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	if p.service != nil {
		p.service.Close()
	}
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (c *cluster) killAll() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	for _, p := range procs {
		p.kill()
		if p.service != nil {
			p.service.Close()
		}
	}
}

// startBootstrap starts `cellnode bootstrap` and returns when it has
// written its addresses.
func (c *cluster) startBootstrap(ctx context.Context, nd *delaynet.Node) *proc {
	addrFile := filepath.Join(c.dir, "bootstrap.addrs")
	p := c.start(nd, "bootstrap", "bootstrap", "--addr-file", addrFile)
	err := poll.Check(ctx, 10*time.Millisecond, func() (bool, error) {
		if !p.alive() {
			return false, fmt.Errorf("bootstrap exited: %v\n%s", p.err, tail(p.log))
		}
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return false, nil
		}
		for _, a := range strings.Fields(string(b)) {
			if strings.Contains(a, "/ip4/"+nd.Addr.String()+"/") {
				c.boot = append(c.boot, a)
			}
		}
		return len(c.boot) > 0, nil
	})
	if err != nil {
		c.tb.Fatalf("bootstrap node: %v", err)
	}
	return p
}

// listen opens the tiny TCP service of a sidecar in nd's namespace: it
// accepts connections and closes them.
func listen(tb testing.TB, nd *delaynet.Node) net.Listener {
	var ln net.Listener
	err := nd.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", servicePort))
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	return ln
}

// startSidecar starts the service of cell in nd's namespace, then
// `cellnode run` beside it, with default flags but --bootstrap.
func (c *cluster) startSidecar(nd *delaynet.Node, tag, cell string) *proc {
	ln := listen(c.tb, nd)
	args := []string{"run", "--name", cell, "--endpoint", fmt.Sprintf(":%d", servicePort), "--bootstrap", strings.Join(c.boot, ",")}
	args = append(args, strings.Fields(os.Getenv("CELLNODE_NETBENCH_RUN_ARGS"))...)
	p := c.start(nd, tag, args...)
	p.service, p.cell = ln, cell
	return p
}

// client dials a running node's local API.
func (p *proc) client(ctx context.Context) (*node.Client, error) {
	var cl *node.Client
	err := poll.Check(ctx, 10*time.Millisecond, func() (bool, error) {
		if !p.alive() {
			return false, fmt.Errorf("node exited: %v\n%s", p.err, tail(p.log))
		}
		var err error
		cl, err = node.Dial(p.home)
		return err == nil, nil
	})
	return cl, err
}

// waitAnnounced waits until a sidecar has published its record once.
func (p *proc) waitAnnounced(ctx context.Context) error {
	cl, err := p.client(ctx)
	if err != nil {
		return err
	}
	return poll.Check(ctx, 20*time.Millisecond, func() (bool, error) {
		if !p.alive() {
			return false, fmt.Errorf("node exited: %v\n%s", p.err, tail(p.log))
		}
		st, err := cl.Status(ctx)
		if err != nil {
			return false, nil
		}
		for _, a := range st.Cells {
			if a.Publishes > 0 {
				return true, nil
			}
		}
		return false, nil
	})
}

// findResult is what `cellnode find --json` prints.
type findResult = node.FindResult

// run is one finished one-shot command.
type run struct {
	start, end time.Time
	exit       int
	res        *findResult
	logs       []logLine
	packets    []delaynet.Packet
	stdout     string
}

func (r run) took() time.Duration { return r.end.Sub(r.start) }

// reachable counts the instances a find reached.
func (r run) reachable() int {
	if r.res == nil {
		return 0
	}
	k := 0
	for _, in := range r.res.Instances {
		if in.Reachable {
			k++
		}
	}
	return k
}

// oneShot runs a cellnode command in nd's namespace with the given home
// and runtime directory, records its packets, and parses its --json output
// and its log lines.
func (c *cluster) oneShot(ctx context.Context, nd *delaynet.Node, home, runtime string, args ...string) run {
	tl := &traceLog{}
	c.mu.Lock()
	c.trace[nd.Index] = tl
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.trace, nd.Index)
		c.mu.Unlock()
	}()
	cmd := exec.CommandContext(ctx, c.bin, append(args, "--home", home)...)
	cmd.Env = c.env(runtime)
	cmd.Dir = c.workDir(filepath.Base(home))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	r := run{start: time.Now()}
	if err := nd.Start(cmd); err != nil {
		c.tb.Fatalf("start %v: %v", args, err)
	}
	err := cmd.Wait()
	r.end = time.Now()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	case err != nil:
		c.tb.Fatalf("%v: %v", args, err)
	}
	r.stdout = stdout.String()
	var res findResult
	if json.Unmarshal(stdout.Bytes(), &res) == nil {
		r.res = &res
	}
	r.logs = parseLogs(stderr.String())
	r.packets = tl.get()
	_ = os.WriteFile(home+".out", append(stdout.Bytes(), stderr.Bytes()...), 0o600)
	if r.exit != 0 {
		msg := stderr.String()
		if len(msg) > 1500 {
			msg = msg[len(msg)-1500:]
		}
		c.tb.Logf("%v exited %d after %v:\n%s", args, r.exit, r.took().Round(time.Millisecond), msg)
	}
	return r
}

// onPacket keeps the packets to and from the traced nodes.
func (c *cluster) onPacket(pk delaynet.Packet) {
	c.mu.Lock()
	tl := c.trace[pk.From]
	if tl == nil {
		tl = c.trace[pk.To]
	}
	c.mu.Unlock()
	if tl != nil {
		tl.add(pk)
	}
}

type traceLog struct {
	mu sync.Mutex
	pk []delaynet.Packet
}

func (t *traceLog) add(p delaynet.Packet) {
	t.mu.Lock()
	t.pk = append(t.pk, p)
	t.mu.Unlock()
}

func (t *traceLog) get() []delaynet.Packet {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]delaynet.Packet(nil), t.pk...)
}

// logLine is one line of cellnode's text log.
type logLine struct {
	time time.Time
	msg  string
	line string
}

// parseLogs reads slog text lines (time=... level=... msg=...).
func parseLogs(s string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		ts, ok := field(l, "time")
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		msg, _ := field(l, "msg")
		out = append(out, logLine{time: t, msg: msg, line: l})
	}
	return out
}

// field returns the value of key=value in a slog text line, unquoted.
func field(line, key string) (string, bool) {
	i := strings.Index(" "+line, " "+key+"=")
	if i < 0 {
		return "", false
	}
	v := line[i+len(key)+1:]
	if strings.HasPrefix(v, `"`) {
		end := 1
		for end < len(v) && (v[end] != '"' || v[end-1] == '\\') {
			end++
		}
		return strings.ReplaceAll(v[1:min(end, len(v))], `\"`, `"`), true
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v, true
}

// logTime returns the time of the first line whose message is msg.
func logTime(lines []logLine, msg string) (time.Time, bool) {
	for _, l := range lines {
		if l.msg == msg {
			return l.time, true
		}
	}
	return time.Time{}, false
}

// fileLogs parses a process's log file.
func fileLogs(path string) []logLine {
	b, _ := os.ReadFile(path)
	return parseLogs(string(b))
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
