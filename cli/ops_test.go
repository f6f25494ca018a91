package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/spawn"
	ma "github.com/multiformats/go-multiaddr"
)

// TestFrictions: the rough edges a new user hit, each worded as what it is
// and with the documented exit code.
func TestFrictions(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    string
		notWant string
	}{
		{"offline by choice", []string{"find", "acme/x", "--bootstrap", "none"}, ExitFailure, "offline by choice (--bootstrap none)", "no peer"},
		{"bootstrap without peer ID", []string{"find", "acme/x", "--bootstrap", "/ip4/127.0.0.1/tcp/1"}, ExitUsage, "no peer ID", ""},
		{"run bootstrap without peer ID", []string{"run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--bootstrap", "/ip4/127.0.0.1/tcp/1"}, ExitUsage, "no peer ID", ""},
		{"listen garbage", []string{"run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--listen", "garbage"}, ExitUsage, "--listen", ""},
		{"bootstrap listen garbage", []string{"bootstrap", "--home", t.TempDir(), "--listen", "garbage"}, ExitUsage, "--listen", ""},
		{"old QUIC draft", []string{"run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--listen", "/ip4/127.0.0.1/udp/4999/quic"}, ExitUsage, "old QUIC draft", "fx"},
		{"bad log format", []string{"version", "--log-format", "xml"}, ExitUsage, "--log-format", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || (tc.notWant != "" && strings.Contains(stderr, tc.notWant)) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q, not %q)", code, tc.code, stderr, tc.want, tc.notWant)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
				t.Fatalf("more than two lines for one error:\n%s", stderr)
			}
		})
	}
}

// TestKeyMessages: key new without --out writes into the state directory,
// not the current one, and refuses to overwrite; key delegate --home on a
// home with no identity says how to make one.
func TestKeyMessages(t *testing.T) {
	isolate(t)
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	cwd := t.TempDir()
	os.Chdir(cwd)
	code, out, stderr := run(t, "key", "new")
	want := filepath.Join(os.Getenv("CELLNODE_HOME"), "keys", "publisher.key")
	if code != 0 || !strings.Contains(stderr, want) || strings.TrimSpace(out) == "" {
		t.Fatalf("key new: %d %q %q", code, out, stderr)
	}
	if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
		t.Fatalf("key new wrote into the current directory: %v", ents)
	}
	if _, err := readPublisherKey(want); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, "key", "new")
	if code != ExitFailure || !strings.Contains(stderr, "not overwriting") || !strings.Contains(stderr, "--out") {
		t.Fatalf("second key new: %d %q", code, stderr)
	}
	home := t.TempDir()
	code, _, stderr = run(t, "key", "delegate", "--key", want, "--name", "acme/x", "--home", home)
	if code != ExitUsage || !strings.Contains(stderr, "cellnode id --home "+home) || strings.Contains(stderr, "run the node once") {
		t.Fatalf("delegate --home without identity: %d %q", code, stderr)
	}
	if code, _, _ := run(t, "id", "--home", home); code != 0 {
		t.Fatal("id")
	}
	if code, out, stderr := run(t, "key", "delegate", "--key", want, "--name", "acme/x", "--home", home); code != 0 || !strings.Contains(out, "CELLNODE DELEGATION") {
		t.Fatalf("delegate after id: %d %s", code, stderr)
	}
}

// TestResolveFailureLogged: the default bootstrap failing to resolve is
// routine (info, hidden at the one-shot commands' warn level); a list the
// operator gave failing is one warning line. (No test resolves the real
// default: it is never dialled in tests.)
func TestResolveFailureLogged(t *testing.T) {
	err := errors.Join(bootstrap.ErrNoPeers, errors.New("bootstrap: resolve /dnsaddr/cell.network: no such host"))
	for _, tc := range []struct {
		src   string
		lines int
	}{{bootstrap.SourceDefault, 0}, {bootstrap.SourceFlag, 1}, {bootstrap.SourceEnv, 1}} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		logResolveFailure(log, bootstrap.List{Source: tc.src, Addrs: []ma.Multiaddr{ma.StringCast(bootstrap.DefaultAddr)}}, err)
		if got := strings.Count(buf.String(), "\n"); got != tc.lines {
			t.Fatalf("%s: %d lines:\n%s", tc.src, got, buf.String())
		}
	}
}

// TestFindTimeout: a find whose --timeout ends before it does says it
// timed out and exits 1, instead of calling itself offline.
func TestFindTimeout(t *testing.T) {
	isolate(t)
	boot, _ := startNetwork(t)
	code, out, stderr := run(t, "find", "acme/x", "--bootstrap", boot, "--timeout", "1ms")
	if code != ExitFailure || !strings.Contains(stderr, "timed out after 1ms") || strings.Contains(stderr, "offline") || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// background runs a command until the test ends, with its output.
func background(t *testing.T, args ...string) (stdout, stderr *syncBuffer) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		Run(ctx, args, stdout, stderr)
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return stdout, stderr
}

// TestStatusAndMetrics: status talks to the running node and shows its
// DHTs, addresses, bootstrap peers and the announced cell; --json has the
// same; --metrics serves the metrics; and the bad cases: no node, a
// metrics address in use, a listen port a bootstrap node holds.
func TestStatusAndMetrics(t *testing.T) {
	isolate(t)
	boot, _ := startNetwork(t)
	svc, _ := net.Listen("tcp", "127.0.0.1:0")
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	home := t.TempDir()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := free.Addr().String()
	free.Close()
	_, runErr := background(t, "run", "--name", "acme/status", "--endpoint", svc.Addr().String(), "--home", home,
		"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--check-interval", "50ms",
		"--metrics", metricsAddr, "--log-format", "json")

	var st node.Status
	waitUntil(t, func() bool {
		code, out, _ := run(t, "status", "--home", home, "--json")
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		return len(st.Cells) == 1 && st.Cells[0].Announcing && st.Cells[0].Seq > 0 && st.Cells[0].Checks > 0
	})
	if st.Modes["lan"] != "server" || st.Tables["lan"] < 1 || len(st.Listen) == 0 || len(st.Announced) == 0 ||
		len(st.Bootstrap) != 1 || !st.Bootstrap[0].Connected || st.Version == "" || st.MetricsAddr != metricsAddr {
		t.Fatalf("status --json: %+v", st)
	}
	code, out, stderr := run(t, "status", "--home", home)
	for _, want := range []string{st.Peer, "lan: server", "acme/status", "bootstrap", "connected", "http://" + metricsAddr + "/metrics"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("status lacks %q: exit %d\n%s%s", want, code, out, stderr)
		}
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `cellnode_health_checks_total{cell="acme/status",result="ok"}`) {
		t.Fatalf("--metrics serves:\n%.2000s", body.String())
	}
	// --log-format json: every line the node wrote is JSON.
	for l := range strings.SplitSeq(strings.TrimSpace(runErr.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] == nil {
			t.Fatalf("not a JSON log line: %q", l)
		}
	}

	if code, _, stderr := run(t, "status", "--home", t.TempDir()); code != ExitFailure || !strings.Contains(stderr, "no node is running") {
		t.Fatalf("status without a node: %d %q", code, stderr)
	}
	dir := t.TempDir()
	if code, _, stderr := run(t, "run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--home", t.TempDir(),
		"--bootstrap", "none", "--listen", "/ip4/127.0.0.1/tcp/0", "--metrics", metricsAddr); code != ExitFailure || !strings.Contains(stderr, "already in use") {
		t.Fatalf("--metrics in use: %d %q", code, stderr)
	}
	// The bootstrap node's own port: refused, not shared (SO_REUSEPORT).
	a := ma.StringCast(boot)
	port, _ := a.ValueForProtocol(ma.P_TCP)
	if code, _, stderr := run(t, "run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--home", t.TempDir(),
		"--bootstrap", "none", "--listen", "/ip4/127.0.0.1/tcp/"+port); code != ExitFailure || !strings.Contains(stderr, "held by another process") {
		t.Fatalf("listen on the bootstrap's port: %d %q", code, stderr)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	isolate(t)
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "cellnode ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	var in struct{ Version, Go string }
	if code, out, _ := run(t, "version", "--json"); code != 0 || json.Unmarshal([]byte(out), &in) != nil || in.Version == "" || in.Go == "" {
		t.Fatalf("version --json: %q", out)
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if code, out, _ := run(t, "completion", shell); code != 0 || !strings.Contains(out, "cellnode") {
			t.Fatalf("completion %s: %d", shell, code)
		}
	}
	code, out, _ = run(t, "__complete", "run", "--dht-mode", "")
	if code != 0 || !strings.Contains(out, "auto\nserver\nclient") {
		t.Fatalf("--dht-mode completion: %q", out)
	}
	if _, out, _ := run(t, "__complete", "--log-format", ""); !strings.Contains(out, "text\njson") {
		t.Fatalf("--log-format completion: %q", out)
	}
}

// TestGC: gc removes builds no running cell uses, remotes, the object
// cache and records of exited cells; keeps what is in use or recent; a dry
// run removes nothing; a running node keeps objects.git.
func TestGC(t *testing.T) {
	isolate(t)
	home := t.TempDir()
	mk := func(rel string) {
		p := filepath.Join(home, rel)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, bytes.Repeat([]byte("x"), 2048), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mk("builds/live-bafA/main.go")
	mk("builds/dead-bafB/main.go")
	mk("repos/abc/HEAD")
	mk("objects.git/HEAD")
	spawn.Write(home, spawn.Cell{Name: "live", Commit: "bafA", PID: os.Getpid()}) // this process stands in for the cell
	spawn.Write(home, spawn.Cell{Name: "dead", Commit: "bafB", PID: 1 << 30})
	exists := func(rel string) bool { _, err := os.Stat(filepath.Join(home, rel)); return err == nil }

	code, out, _ := run(t, "gc", "--home", home, "--dry-run")
	if code != 0 || !strings.Contains(out, "would remove builds/dead-bafB") || !exists("builds/dead-bafB") || !exists("objects.git") {
		t.Fatalf("dry run: %d\n%s", code, out)
	}
	if code, out, _ := run(t, "gc", "--home", home, "--older-than", "1h"); code != 0 || !exists("builds/dead-bafB") || !strings.Contains(out, "modified recently") {
		t.Fatalf("--older-than 1h: %d\n%s", code, out)
	}
	// A node running with this home uses objects.git.
	n, err := node.New(node.Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: true, RuntimeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "gc", "--home", home)
	n.Close()
	if code != 0 || exists("builds/dead-bafB") || exists("repos/abc") || exists("spawned/dead.json") || !exists("builds/live-bafA") ||
		!exists("objects.git") || !exists("spawned/live.json") || !strings.Contains(out, "freed") {
		t.Fatalf("gc: %d\n%s", code, out)
	}
	if code, _, _ := run(t, "gc", "--home", home); code != 0 || exists("objects.git") {
		t.Fatal("objects.git kept with no node running")
	}
	if code, _, stderr := run(t, "gc", "--home", filepath.Join(home, "nope")); code != ExitUsage || !strings.Contains(stderr, "not a directory") {
		t.Fatalf("gc on a missing home: %d %q", code, stderr)
	}
}
