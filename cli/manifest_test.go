package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/node"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// cellRepo makes a git repository holding a Cell.json and one commit.
func cellRepo(t *testing.T, cellJSON string) string {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "Cell.json"), []byte(cellJSON), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644)
	wt, _ := r.Worktree()
	wt.Add("Cell.json")
	wt.Add("main.go")
	sig := &object.Signature{Name: "Ada", Email: "ada@example.com", When: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, err := wt.Commit("first\n", &git.CommitOptions{Author: sig, Committer: sig}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestManifestEndToEnd: a cell run from its repository announces its
// commit CID and serves the objects; from a fresh home, find shows the CID,
// manifest show fetches the manifest by name and by CID, the version and
// fingerprint filters keep or drop it, and clone writes the repository.
func TestManifestEndToEnd(t *testing.T) {
	isolate(t)
	repo := cellRepo(t, `{"name":"acme/hello","version":"0.2.0","fingerprint":"9f2c44d1a07be311"}`)
	code, out, stderr := run(t, "manifest", "cid", "--dir", repo)
	if code != 0 {
		t.Fatalf("manifest cid: %d %s", code, stderr)
	}
	commit := strings.TrimSpace(out)
	if !strings.HasPrefix(commit, "baf4bcf") {
		t.Fatalf("manifest cid printed %q", commit)
	}

	boot, bg := startNetwork(t)
	ln, _ := listenService()
	defer ln.Close()
	bg("run", "--dir", repo, "--endpoint", ln.Addr().String(), "--home", t.TempDir(),
		"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--check-interval", "100ms")

	fresh := func(args ...string) (int, string, string) {
		t.Setenv(node.RuntimeDirEnv, t.TempDir())
		return run(t, append(args, "--bootstrap", boot, "--home", t.TempDir())...)
	}
	var res struct {
		Instances []struct{ Manifest string }
	}
	waitUntil(t, func() bool {
		_, out, _ := fresh("find", "acme/hello", "--json", "--timeout", "5s")
		return json.Unmarshal([]byte(out), &res) == nil && len(res.Instances) == 1
	})
	if res.Instances[0].Manifest != commit {
		t.Fatalf("record carries manifest %q, want %q", res.Instances[0].Manifest, commit)
	}
	// By name with nothing pinned: refused, with the commit listed.
	for _, args := range [][]string{{"manifest", "show", "acme/hello"}, {"clone", "acme/hello", filepath.Join(t.TempDir(), "x")}} {
		code, _, stderr := fresh(args...)
		if code != ExitUsage || !strings.Contains(stderr, "--publisher") || !strings.Contains(stderr, commit) {
			t.Fatalf("%v with nothing pinned: exit %d\n%s", args, code, stderr)
		}
	}
	for _, args := range [][]string{{"manifest", "show", "acme/hello", "--untrusted"}, {"manifest", "show", commit}} {
		code, out, stderr := fresh(args...)
		if code != 0 || !strings.Contains(out, "acme/hello 0.2.0") || !strings.Contains(out, commit) {
			t.Fatalf("%v: exit %d\n%s\n%s", args, code, out, stderr)
		}
	}
	for _, tc := range []struct {
		flags []string
		code  int
	}{
		{[]string{"--version", ">=0.2"}, 0},
		{[]string{"--version", "0.2.0", "--fingerprint", "0x9F2C44D1A07BE311"}, 0},
		{[]string{"--version", "<0.2"}, ExitFailure},
		{[]string{"--fingerprint", "1234"}, ExitFailure},
	} {
		if code, out, stderr := fresh(append([]string{"find", "acme/hello"}, tc.flags...)...); code != tc.code {
			t.Fatalf("find %v: exit %d, want %d\n%s%s", tc.flags, code, tc.code, out, stderr)
		}
	}
	target := filepath.Join(t.TempDir(), "hello")
	if code, out, stderr := fresh("clone", "acme/hello", target, "--untrusted"); code != 0 || !strings.Contains(stderr, "UNTRUSTED") {
		t.Fatalf("clone: exit %d\n%s%s", code, out, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(target, "Cell.json")); err != nil || !strings.Contains(string(b), "acme/hello") {
		t.Fatalf("cloned Cell.json: %q %v", b, err)
	}
	if code, _, stderr := fresh("clone", commit, target); code != ExitFailure || !strings.Contains(stderr, "not empty") {
		t.Fatalf("clone into a non-empty dir: exit %d, %s", code, stderr)
	}
}

func TestManifestBadInput(t *testing.T) {
	isolate(t)
	repo := cellRepo(t, `{"name":"acme/hello","version":"0.2.0"}`)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown ref", []string{"manifest", "cid", "--dir", repo, "--ref", "v9.9.9"}, ExitUsage, "v9.9.9"},
		{"not a repo", []string{"manifest", "cid", "--dir", t.TempDir()}, ExitUsage, "not a git repository"},
		{"not a commit cid", []string{"manifest", "show", "bafkqaaa"}, ExitUsage, "git-raw"},
		{"garbage cid", []string{"manifest", "show", "hello"}, ExitUsage, "commit CID"},
		{"bad fingerprint", []string{"find", "acme/hello", "--fingerprint", "xyz"}, ExitUsage, "--fingerprint"},
		{"bad version", []string{"find", "acme/hello", "--version", "~~1"}, ExitUsage, "--version"},
		{"run name differs", []string{"run", "--dir", repo, "--name", "acme/other", "--endpoint", ":9000"}, ExitUsage, "differs"},
		{"run unknown ref", []string{"run", "--dir", repo, "--ref", "nope", "--endpoint", ":9000"}, ExitUsage, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.want)
			}
		})
	}
}
