package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node/spawn"
)

func TestInitAddPs(t *testing.T) {
	isolate(t)
	t.Setenv(SocketDirEnv, t.TempDir())
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	os.Chdir(t.TempDir())
	home := t.TempDir()

	code, out, stderr := run(t, "init", "acme/hello", "--home", home)
	if code != 0 {
		t.Fatalf("init: %d %s", code, stderr)
	}
	if !strings.Contains(out, "created hello/") {
		t.Fatalf("init said %q", out)
	}
	m, err := manifest.Load("hello")
	if err != nil || m.Name != "acme/hello" || len(m.Publishers) != 1 || m.Build == nil {
		t.Fatalf("Cell.json: %+v %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(home, "keys", "acme-hello.key")); err != nil {
		t.Fatal("publisher key not in the state directory")
	}
	if _, err := project.LoadDeps("hello"); err != nil {
		t.Fatalf("Cell.toml: %v", err)
	}
	if code, _, stderr := run(t, "init", "acme/hello", "--home", home); code != ExitUsage || !strings.Contains(stderr, "not overwriting") {
		t.Fatalf("second init: %d %s", code, stderr)
	}
	if code, _, _ := run(t, "init", "Hello"); code != ExitUsage {
		t.Fatal("init with a bad name succeeded")
	}

	before, _ := os.ReadFile("hello/Cell.toml")
	code, _, stderr = run(t, "add", "exchange", "--dir", "hello", "--git", "https://git.example.com/acme/exchange.git", "--tag", "v1.0.0", "--max-latency-ms", "50", "--auto-spawn")
	if code != 0 {
		t.Fatalf("add: %s", stderr)
	}
	after, _ := os.ReadFile("hello/Cell.toml")
	for _, line := range strings.Split(string(before), "\n") {
		if !strings.Contains(string(after), line) {
			t.Fatalf("add lost the line %q", line)
		}
	}
	deps, err := project.LoadDeps("hello")
	if err != nil || deps.Cells["exchange"].Tag != "v1.0.0" || !deps.Cells["exchange"].AutoSpawn || deps.Cells["exchange"].MaxLatencyMS != 50 {
		t.Fatalf("after add: %+v %v", deps, err)
	}
	// Adding it again merges: the flags given replace their fields, the
	// others keep theirs (here: max_latency_ms and auto_spawn), and
	// nothing else in the file changes.
	if code, out, stderr := run(t, "add", "exchange", "--dir", "hello", "--tag", "v1.1.0"); code != 0 || !strings.Contains(out, "updated exchange") {
		t.Fatalf("add again: %d %s %s", code, out, stderr)
	}
	deps, _ = project.LoadDeps("hello")
	if d := deps.Cells["exchange"]; d.Tag != "v1.1.0" || !d.AutoSpawn || d.MaxLatencyMS != 50 || d.Git != "https://git.example.com/acme/exchange.git" {
		t.Fatalf("update lost fields: %+v", d)
	}
	run(t, "add", "exchange", "--dir", "hello", "--auto-spawn=false", "--max-latency-ms", "0")
	deps, _ = project.LoadDeps("hello")
	if d := deps.Cells["exchange"]; d.Tag != "v1.1.0" || d.AutoSpawn || d.MaxLatencyMS != 0 {
		t.Fatalf("explicit flags not applied: %+v", d)
	}
	if code, _, stderr := run(t, "add", "x", "--dir", "hello"); code != ExitUsage || !strings.Contains(stderr, "--git") {
		t.Fatalf("add without --git: %d %s", code, stderr)
	}
	if code, _, _ := run(t, "add", "Bad Name", "--dir", "hello", "--git", "file:///x"); code != ExitUsage {
		t.Fatal("add with a bad name succeeded")
	}

	// ps: a cell that resolve started, by its registry entry (this
	// process stands in for it, so the pid is alive).
	spawn.Write(home, spawn.Cell{Name: "hello", Cell: "acme/hello", PID: os.Getpid(), Socket: "/tmp/x/hello.sock", Version: "0.1.0"})
	code, out, _ = run(t, "ps", "--json", "--home", home)
	var ps struct{ Cells []spawn.Running }
	if code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps.Cells) != 1 || ps.Cells[0].Name != "acme/hello" || ps.Cells[0].PID != os.Getpid() {
		t.Fatalf("ps --json: %s", out)
	}
}

// TestInitREADME: the README that init writes names the real key path and
// home, has no placeholder left, and every cellnode command line in it
// parses with the real commands and flags.
func TestInitREADME(t *testing.T) {
	isolate(t)
	wd, _ := os.Getwd()
	t.Cleanup(func() { os.Chdir(wd) })
	os.Chdir(t.TempDir())
	home := t.TempDir()
	if code, _, stderr := run(t, "init", "acme/hello", "--home", home); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	b, err := os.ReadFile("hello/README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, bad := range []string{"{{", "$acme", "...key", "FILE"} {
		if strings.Contains(readme, bad) {
			t.Fatalf("README holds %q:\n%s", bad, readme)
		}
	}
	key := filepath.Join(home, "keys", "acme-hello.key")
	if !strings.Contains(readme, key) || !strings.Contains(readme, "cellnode id --home "+home) {
		t.Fatalf("README does not name the key %s and the home:\n%s", key, readme)
	}
	n := 0
	for line := range strings.SplitSeq(readme, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "cellnode ") {
			continue
		}
		n++
		if err := parseCommandLine(strings.Fields(line)[1:]); err != nil {
			t.Errorf("README: %q: %v", line, err)
		}
	}
	if n < 5 {
		t.Fatalf("README has %d cellnode command lines:\n%s", n, readme)
	}
}
