package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/manifest"
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
	if _, err := manifest.LoadDeps("hello"); err != nil {
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
	deps, err := manifest.LoadDeps("hello")
	if err != nil || deps.Cells["exchange"].Tag != "v1.0.0" || !deps.Cells["exchange"].AutoSpawn || deps.Cells["exchange"].MaxLatencyMS != 50 {
		t.Fatalf("after add: %+v %v", deps, err)
	}
	run(t, "add", "exchange", "--dir", "hello", "--git", "https://git.example.com/acme/exchange.git", "--tag", "v1.1.0")
	deps, _ = manifest.LoadDeps("hello")
	if d := deps.Cells["exchange"]; d.Tag != "v1.1.0" || d.AutoSpawn {
		t.Fatalf("update: %+v", d)
	}
	if code, _, stderr := run(t, "add", "x", "--dir", "hello"); code != ExitUsage || !strings.Contains(stderr, "--git") {
		t.Fatalf("add without --git: %d %s", code, stderr)
	}
	if code, _, _ := run(t, "add", "Bad Name", "--dir", "hello", "--git", "file:///x"); code != ExitUsage {
		t.Fatal("add with a bad name succeeded")
	}

	// ps: a cell that resolve started, by its registry entry (this
	// process stands in for it, so the pid is alive).
	writeSpawned(home, spawnedCell{Name: "hello", Cell: "acme/hello", PID: os.Getpid(), Socket: "/tmp/x/hello.sock", Version: "0.1.0"})
	code, out, _ = run(t, "ps", "--json", "--home", home)
	var ps struct{ Cells []psRow }
	if code != 0 || json.Unmarshal([]byte(out), &ps) != nil || len(ps.Cells) != 1 || ps.Cells[0].Name != "acme/hello" || ps.Cells[0].PID != os.Getpid() {
		t.Fatalf("ps --json: %s", out)
	}
}
