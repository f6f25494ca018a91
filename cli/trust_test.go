package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/node"
)

// TestTrustEndToEnd: a publisher key, a delegated instance and an open
// instance of the same cell. A finder that trusts the publisher sees only
// the delegated one (and counts the other); --all lists both, marked; a
// finder with no pin sees both and is told nothing is pinned.
func TestTrustEndToEnd(t *testing.T) {
	isolate(t)
	keyFile := filepath.Join(t.TempDir(), "acme.key")
	code, out, stderr := run(t, "key", "new", "--out", keyFile)
	if code != 0 {
		t.Fatalf("key new: %d %s", code, stderr)
	}
	pub := strings.TrimSpace(out)
	if code, _, stderr := run(t, "key", "new", "--out", keyFile); code == 0 || !strings.Contains(stderr, "not overwriting") {
		t.Fatalf("key new over an existing key: %d %s", code, stderr)
	}
	cellDir := t.TempDir()
	os.WriteFile(filepath.Join(cellDir, "Cell.json"), []byte(`{"name":"acme/exchange","version":"1.0.0","publishers":["`+pub+`"]}`), 0o644)

	homeA := t.TempDir()
	code, idOut, stderr := run(t, "id", "--home", homeA)
	if code != 0 {
		t.Fatalf("id: %s", stderr)
	}
	delegFile := filepath.Join(t.TempDir(), "a.delegation")
	if code, _, stderr := run(t, "key", "delegate", "--key", keyFile, "--name", "acme/exchange", "--node", strings.TrimSpace(idOut), "--out", delegFile); code != 0 {
		t.Fatalf("key delegate: %s", stderr)
	}
	// The same delegation, from the node's home rather than its peer ID.
	if code, out, stderr := run(t, "key", "delegate", "--key", keyFile, "--name", "acme/exchange", "--home", homeA); code != 0 || !strings.Contains(out, "CELLNODE DELEGATION") {
		t.Fatalf("key delegate --home: %d %s", code, stderr)
	}

	boot, bg := startNetwork(t)
	common := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--check-interval", "100ms"}
	lnA, _ := listenService()
	defer lnA.Close()
	bg(append([]string{"run", "--dir", cellDir, "--endpoint", lnA.Addr().String(), "--home", homeA, "--delegation", delegFile}, common...)...)
	lnB, _ := listenService()
	defer lnB.Close()
	bg(append([]string{"run", "--name", "acme/exchange", "--endpoint", lnB.Addr().String(), "--home", t.TempDir()}, common...)...)

	type result struct {
		Pinned    bool
		Untrusted int
		Instances []struct {
			Peer      string
			Publisher string
			Trusted   bool
		}
	}
	find := func(args ...string) (result, string) {
		t.Setenv(node.RuntimeDirEnv, t.TempDir())
		_, out, stderr := run(t, append([]string{"find", "acme/exchange", "--json", "--bootstrap", boot, "--home", t.TempDir()}, args...)...)
		var r result
		json.Unmarshal([]byte(out), &r)
		return r, stderr
	}
	waitUntil(t, func() bool { r, _ := find(); return len(r.Instances) == 2 })
	r, stderr := find()
	if r.Pinned || !strings.Contains(stderr, "nothing is pinned") {
		t.Fatalf("unpinned find: %+v %s", r, stderr)
	}
	r, _ = find("--publisher", pub)
	if !r.Pinned || len(r.Instances) != 1 || !r.Instances[0].Trusted || r.Instances[0].Publisher != pub || r.Untrusted != 1 {
		t.Fatalf("pinned find: %+v", r)
	}
	if r.Instances[0].Peer != strings.TrimSpace(idOut) {
		t.Fatalf("trusted instance is %s, want %s", r.Instances[0].Peer, idOut)
	}
	r, _ = find("--publisher", pub, "--all")
	if len(r.Instances) != 2 || r.Untrusted != 1 {
		t.Fatalf("--all: %+v", r)
	}
	// A publisher nobody delegated for: nothing trusted to show.
	other := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	if r, _ := find("--publisher", other); len(r.Instances) != 0 || r.Untrusted != 2 {
		t.Fatalf("foreign publisher: %+v", r)
	}
}

func TestDelegationBadInput(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	keyFile, otherKey := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key")
	_, pub, _ := run(t, "key", "new", "--out", keyFile)
	run(t, "key", "new", "--out", otherKey)
	pub = strings.TrimSpace(pub)
	home := t.TempDir()
	_, id, _ := run(t, "id", "--home", home)
	id = strings.TrimSpace(id)
	deleg := func(key, name string) string {
		f := filepath.Join(t.TempDir(), "d")
		if code, _, stderr := run(t, "key", "delegate", "--key", key, "--name", name, "--node", id, "--out", f); code != 0 {
			t.Fatal(stderr)
		}
		return f
	}
	cellDir := t.TempDir()
	os.WriteFile(filepath.Join(cellDir, "Cell.json"), []byte(`{"name":"acme/exchange","publishers":["`+pub+`"]}`), 0o644)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("hello"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"for another cell", []string{"run", "--dir", cellDir, "--endpoint", ":9000", "--home", home, "--delegation", deleg(keyFile, "acme/other")}, "not acme/exchange"},
		{"from an unlisted publisher", []string{"run", "--dir", cellDir, "--endpoint", ":9000", "--home", home, "--delegation", deleg(otherKey, "acme/exchange")}, "does not list"},
		{"for another node", []string{"run", "--dir", cellDir, "--endpoint", ":9000", "--home", t.TempDir(), "--delegation", deleg(keyFile, "acme/exchange"), "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "none"}, "another node"},
		{"not a delegation", []string{"run", "--dir", cellDir, "--endpoint", ":9000", "--home", home, "--delegation", junk}, "not a CELLNODE DELEGATION"},
		{"delegate with a bad key file", []string{"key", "delegate", "--key", junk, "--name", "acme/x", "--node", id}, "--key"},
		{"delegate with both node and home", []string{"key", "delegate", "--key", keyFile, "--name", "acme/x", "--node", id, "--home", home}, "one of --node or --home"},
		{"delegate with a bad ttl", []string{"key", "delegate", "--key", keyFile, "--name", "acme/x", "--node", id, "--ttl", "2400h"}, "--ttl"},
		{"delegate to a bad peer id", []string{"key", "delegate", "--key", keyFile, "--name", "acme/x", "--node", "nope"}, "--node"},
		{"find with a bad publisher", []string{"find", "acme/x", "--publisher", "xyz"}, "--publisher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != ExitUsage || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr, tc.want)
			}
		})
	}
}
