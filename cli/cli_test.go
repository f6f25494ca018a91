package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// isolate keeps a test away from the user's state and from the default
// bootstrap peer.
func isolate(t *testing.T) {
	t.Setenv("CELLNODE_HOME", t.TempDir())
	t.Setenv(node.RuntimeDirEnv, t.TempDir())
	t.Setenv("CELLNODE_BOOTSTRAP", "none")
}

func TestUsageErrors(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"malformed name", []string{"find", "Acme_Exchange"}, ExitUsage, "org/name"},
		{"name without org", []string{"find", "exchange"}, ExitUsage, "e.g. acme/exchange"},
		{"unknown flag", []string{"find", "acme/x", "--frobnicate"}, ExitUsage, "unknown flag"},
		{"unknown command", []string{"frobnicate"}, ExitUsage, "unknown command"},
		{"no name", []string{"find"}, ExitUsage, "one cell name"},
		{"bad timeout", []string{"find", "acme/x", "--timeout", "-1s"}, ExitUsage, "--timeout"},
		{"bad bootstrap", []string{"find", "acme/x", "--bootstrap", "not-a-multiaddr"}, ExitUsage, "not-a-multiaddr"},
		{"bad log level", []string{"find", "acme/x", "--log-level", "loud"}, ExitUsage, "--log-level"},
		{"run without endpoint", []string{"run", "--name", "acme/x"}, ExitUsage, "--endpoint is required"},
		{"run bad endpoint", []string{"run", "--name", "acme/x", "--endpoint", "nowhere"}, ExitUsage, "HOST:PORT"},
		{"run missing Cell.json", []string{"run", "--endpoint", ":9000", "--dir", dir}, ExitUsage, "Cell.json"},
		{"run bad name", []string{"run", "--name", "ACME/x", "--endpoint", ":9000", "--dir", dir}, ExitUsage, "org/name"},
		{"run bad mode", []string{"run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--dht-mode", "sometimes"}, ExitUsage, "--dht-mode"},
		{"run port in use", []string{"run", "--name", "acme/x", "--endpoint", ":9000", "--dir", dir, "--listen", "/ip4/127.0.0.1/tcp/" + port}, ExitFailure, "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.want)
			}
		})
	}
}

func TestRunNameMismatch(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Cell.json"), []byte(`{"name":"acme/exchange","version":"1.0.0"}`), 0o644)
	code, _, stderr := run(t, "run", "--name", "acme/other", "--endpoint", ":9000", "--dir", dir)
	if code != ExitUsage || !strings.Contains(stderr, "differs") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	os.WriteFile(filepath.Join(dir, "Cell.json"), []byte(`{"name":"acme/exchange","bogus":1}`), 0o644)
	code, _, stderr = run(t, "run", "--endpoint", ":9000", "--dir", dir)
	if code != ExitUsage || !strings.Contains(stderr, "bogus") {
		t.Fatalf("invalid Cell.json: exit %d, stderr %q", code, stderr)
	}
}

// TestHelpHasExamples: every command's --help says what it does and shows
// an example.
func TestHelpHasExamples(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Name() == "help" {
			return
		}
		code, out, _ := run(t, append(strings.Fields(c.CommandPath())[1:], "--help")...)
		if code != 0 || c.Short == "" || !strings.Contains(out, "Examples:") || !strings.Contains(out, "cellnode ") {
			t.Errorf("%s --help: exit %d\n%s", c.CommandPath(), code, out)
		}
	}
	walk(newRoot(&env{stdout: io.Discard, stderr: io.Discard}))
}

func TestFindOffline(t *testing.T) {
	isolate(t)
	// An unreachable bootstrap peer: a closed port.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	boot := "/ip4/127.0.0.1/tcp/" + strconv.Itoa(addr.Port) + "/p2p/12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7"
	code, out, stderr := run(t, "find", "acme/x", "--json", "--bootstrap", boot, "--timeout", "5s")
	if code != ExitFailure || !strings.Contains(stderr, "offline") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	// The note and --json say which peer was dialled and how it failed.
	const peerID, cause = "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7", "connection refused"
	if !strings.Contains(stderr, peerID) || !strings.Contains(stderr, cause) {
		t.Errorf("stderr %q does not name the peer %s and %q", stderr, peerID, cause)
	}
	var res struct {
		Name          string
		Instances     []any
		Offline       bool
		OfflineReason string `json:"offline_reason"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Name != "acme/x" || res.Instances == nil || len(res.Instances) != 0 {
		t.Fatalf("--json with no instances: %q (%v)", out, err)
	}
	if !res.Offline || !strings.Contains(res.OfflineReason, peerID) || !strings.Contains(res.OfflineReason, cause) {
		t.Errorf("--json: offline %v, offline_reason %q: want the peer and %q", res.Offline, res.OfflineReason, cause)
	}
}

// TestCommandsEndToEnd runs the real commands in process: a bootstrap
// node, three instances of acme/exchange and one of acme/ledger under `run`,
// and `find --json` from a fresh home; then one `run` gets its stop signal
// and withdraws.
func TestCommandsEndToEnd(t *testing.T) {
	isolate(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrFile := filepath.Join(t.TempDir(), "addrs")
	var wg sync.WaitGroup
	start := func(ctx context.Context, args ...string) *syncBuffer {
		var out, errb syncBuffer
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := Run(ctx, args, &out, &errb); code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, errb.String())
			}
		}()
		return &errb
	}
	defer wg.Wait()
	defer cancel()
	start(ctx, "bootstrap", "--home", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0", "--addr-file", addrFile)
	var boot string
	waitUntil(t, func() bool {
		b, err := os.ReadFile(addrFile)
		boot = strings.TrimSpace(string(b))
		return err == nil && boot != ""
	})
	cells := []struct {
		name string
		ctx  context.Context
		stop context.CancelFunc
	}{}
	for _, name := range []string{"acme/exchange", "acme/exchange", "acme/exchange", "acme/ledger"} {
		ln, err := listenService()
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cctx, stop := context.WithCancel(ctx)
		cells = append(cells, struct {
			name string
			ctx  context.Context
			stop context.CancelFunc
		}{name, cctx, stop})
		start(cctx, "run", "--name", name, "--endpoint", ln.Addr().String(), "--home", t.TempDir(), "--dir", t.TempDir(),
			"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--check-interval", "100ms")
	}
	find := func(name string) []map[string]any {
		// A fresh home and runtime directory: the DHT is the only way in.
		t.Setenv(node.RuntimeDirEnv, t.TempDir())
		code, out, stderr := run(t, "find", name, "--json", "--bootstrap", boot, "--home", t.TempDir(), "--timeout", "10s")
		var res struct{ Instances []map[string]any }
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("find %s: exit %d, %v: %q %q", name, code, err, out, stderr)
		}
		return res.Instances
	}
	waitUntil(t, func() bool { return len(find("acme/exchange")) == 3 && len(find("acme/ledger")) == 1 })
	for _, in := range find("acme/exchange") {
		for _, k := range []string{"peer", "endpoints", "region", "manifest", "latency_ms", "reachable", "expires"} {
			if _, ok := in[k]; !ok {
				t.Fatalf("instance lacks %q: %v", k, in)
			}
		}
		if in["reachable"] != true {
			t.Fatalf("unreachable: %v", in)
		}
	}
	cells[0].stop() // SIGINT: run withdraws and exits 0
	waitUntil(t, func() bool { return len(find("acme/exchange")) == 2 })
	code, _, _ := run(t, "find", "acme/nothing", "--bootstrap", boot, "--timeout", "5s")
	if code != ExitFailure {
		t.Fatalf("find of an absent cell: exit %d", code)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	poll.T(t, "the condition", cond)
}

// TestDemo runs the Quick start's first command.
func TestDemo(t *testing.T) {
	isolate(t)
	code, out, stderr := run(t, "demo")
	if code != 0 || !strings.Contains(out, "gone from find") || strings.Count(out, "127.0.0.1:") < 6 {
		t.Fatalf("demo: exit %d\n%s\n%s", code, out, stderr)
	}
}

// startNetwork runs a bootstrap node in process and returns its address and
// a function that runs a command in the background until the test ends.
func startNetwork(t *testing.T) (boot string, bg func(args ...string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	bg = func(args ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o, e syncBuffer
			if code := Run(ctx, args, &o, &e); code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, e.String())
			}
		}()
	}
	addrFile := filepath.Join(t.TempDir(), "addrs")
	bg("bootstrap", "--home", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0", "--addr-file", addrFile)
	waitUntil(t, func() bool {
		b, _ := os.ReadFile(addrFile)
		boot = strings.TrimSpace(string(b))
		return boot != ""
	})
	return boot, bg
}
