package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/cellnode/cellnode/manifest/project"
	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/spawn"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// gitRepo makes a repository from files, commits it and tags it v1.0.0.
func gitRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	wt, _ := r.Worktree()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		wt.Add(name)
	}
	sig := &object.Signature{Name: "Ada", Email: "ada@example.com", When: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h, err := wt.Commit("exchange\n", &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateTag("v1.0.0", h, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// exchangeRepo is examples/exchange in a git repository of its own.
func exchangeRepo(t *testing.T) string {
	files := map[string]string{}
	for _, f := range []string{"main.go", "go.mod", "Cell.json"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "exchange", f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	return gitRepo(t, files)
}

func needGo(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH: cannot build cells from source")
	}
	return goBin
}

// startExchange builds the exchange in repo and starts it with the socket
// directory sockDir (and a TCP address when tcp is not empty).
func startExchange(t *testing.T, repo, sockDir, tcp string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "exchange")
	build := exec.Command(needGo(t), "build", "-o", bin, ".")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	args := []string{}
	if tcp != "" {
		args = append(args, "-tcp", tcp)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), SocketDirEnv+"="+sockDir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitUntil(t, func() bool {
		c, err := net.Dial("unix", filepath.Join(sockDir, "exchange.sock"))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func traderDir(t *testing.T, repo string, autoSpawn bool) string {
	dir := t.TempDir()
	toml := fmt.Sprintf("[package]\nname = \"acme/trader\"\n\n[cell]\n# the exchange\nexchange = { git = %q, tag = \"v1.0.0\", auto_spawn = %v }\n", "file://"+repo, autoSpawn)
	if err := os.WriteFile(filepath.Join(dir, "Cell.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

type instancesFile struct {
	Name, Cell, Commit string
	Endpoints          []string
}

func readInstances(t *testing.T, path string) instancesFile {
	t.Helper()
	var f instancesFile
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestResolveMilestone is the first milestone as a test: the trader
// resolves the exchange on this machine, through the DHT from another state
// directory, by building it from source when it is stopped (auto_spawn),
// and fails clearly without auto_spawn.
func TestResolveMilestone(t *testing.T) {
	isolate(t)
	repo := exchangeRepo(t)
	headCID, err := gitobj.CommitCID(repo, "v1.0.0")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("running on this machine", func(t *testing.T) {
		sockDir := t.TempDir()
		t.Setenv(SocketDirEnv, sockDir)
		startExchange(t, repo, sockDir, "")
		trader, out := traderDir(t, repo, false), t.TempDir()
		code, _, stderr := run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", "none")
		if code != 0 {
			t.Fatalf("resolve: %d %s", code, stderr)
		}
		f := readInstances(t, filepath.Join(out, "exchange_instances.json"))
		if len(f.Endpoints) != 1 || f.Endpoints[0] != "unix://exchange.sock" {
			t.Fatalf("endpoints %v", f.Endpoints)
		}
		if _, err := os.Stat(filepath.Join(trader, "Cell.lock")); err != nil {
			t.Fatal("no Cell.lock")
		}
	})

	t.Run("through the DHT", func(t *testing.T) {
		t.Setenv(SocketDirEnv, t.TempDir())
		boot, bg := startNetwork(t)
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		tcp := ln.Addr().String()
		ln.Close()
		startExchange(t, repo, t.TempDir(), tcp)
		bg("run", "--dir", repo, "--endpoint", tcp, "--home", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0",
			"--bootstrap", boot, "--dht-mode", "server", "--check-interval", "100ms")
		// Another state and runtime directory: only the DHT knows the exchange.
		// The trader reaches the git repository through a link, to take it
		// away later.
		t.Setenv(node.RuntimeDirEnv, t.TempDir())
		link := filepath.Join(t.TempDir(), "exchange-link")
		if err := os.Symlink(repo, link); err != nil {
			t.Fatal(err)
		}
		trader, out := traderDir(t, link, false), t.TempDir()
		var stderr string
		waitUntil(t, func() bool {
			var code int
			code, _, stderr = run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", boot, "--home", t.TempDir(), "--format", "rust")
			return code == 0
		})
		b, _ := os.ReadFile(filepath.Join(out, "exchange_instances.rs"))
		if string(b) != fmt.Sprintf("&[%q]\n", tcp) {
			t.Fatalf("exchange_instances.rs = %q (%s)", b, stderr)
		}
		lock, err := project.LoadLock(trader)
		if err != nil {
			t.Fatal(err)
		}
		lc := lock.Get("exchange")
		if lc == nil || lc.Cell != "acme/exchange" || lc.Commit != headCID.String() || lc.Fingerprint != "9f2c44d1a07be311" || lc.Tag != "v1.0.0" {
			t.Fatalf("Cell.lock entry: %+v", lc)
		}

		// The git URL goes away; a fresh home has no git cache. The commit
		// Cell.lock pins is fetched from the peers that serve it.
		os.Remove(link)
		os.Remove(filepath.Join(out, "exchange_instances.rs"))
		code, _, stderr := run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", boot, "--home", t.TempDir(), "--format", "rust")
		if code != 0 || !strings.Contains(stderr, "using the commit Cell.lock pins") {
			t.Fatalf("resolve with the git URL gone: exit %d\n%s", code, stderr)
		}
		if b, _ := os.ReadFile(filepath.Join(out, "exchange_instances.rs")); string(b) != fmt.Sprintf("&[%q]\n", tcp) {
			t.Fatalf("exchange_instances.rs = %q", b)
		}
	})

	t.Run("stopped, auto_spawn builds it from source", func(t *testing.T) {
		needGo(t)
		sockDir := t.TempDir()
		t.Setenv(SocketDirEnv, sockDir)
		home := t.TempDir()
		trader, out := traderDir(t, repo, true), t.TempDir()
		code, _, stderr := run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", "none", "--home", home, "--format", "go")
		if code != 0 {
			t.Fatalf("resolve: %d %s", code, stderr)
		}
		spawned := spawn.List(home)
		if len(spawned) != 1 {
			t.Fatalf("spawned registry: %+v", spawned)
		}
		t.Cleanup(func() { syscall.Kill(-spawned[0].PID, syscall.SIGKILL) })
		b, _ := os.ReadFile(filepath.Join(out, "exchange_instances.go"))
		if !strings.Contains(string(b), `var ExchangeInstances = []string{"unix://exchange.sock"}`) {
			t.Fatalf("exchange_instances.go:\n%s", b)
		}
		c, err := net.Dial("unix", filepath.Join(sockDir, "exchange.sock"))
		if err != nil {
			t.Fatalf("the spawned exchange does not answer: %v", err)
		}
		fmt.Fprintln(c, "PING")
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		c.Close()
		if string(buf[:n]) != "PONG\n" {
			t.Fatalf("spawned exchange answered %q", buf[:n])
		}
		code, psOut, _ := run(t, "ps", "--home", home)
		if code != 0 || !strings.Contains(psOut, "acme/exchange") || !strings.Contains(psOut, strconv.Itoa(spawned[0].PID)) || !strings.Contains(psOut, "spawned by resolve") {
			t.Fatalf("ps:\n%s", psOut)
		}
		// Running again uses the running instance: localhost first.
		code, _, stderr = run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", "none", "--home", home)
		if code != 0 || !strings.Contains(stderr, "running on this machine") {
			t.Fatalf("second resolve: %d %s", code, stderr)
		}
	})

	t.Run("stopped, no auto_spawn fails clearly", func(t *testing.T) {
		t.Setenv(SocketDirEnv, t.TempDir())
		trader, out := traderDir(t, repo, false), t.TempDir()
		os.WriteFile(filepath.Join(trader, "Cell.lock"), []byte("# old lock\nversion = 1\n"), 0o644)
		code, _, stderr := run(t, "resolve", "--dir", trader, "--out", out, "--bootstrap", "none")
		if code != ExitFailure || !strings.Contains(stderr, "auto_spawn is off") || !strings.Contains(stderr, "offline") {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if b, _ := os.ReadFile(filepath.Join(trader, "Cell.lock")); string(b) != "# old lock\nversion = 1\n" {
			t.Fatalf("Cell.lock changed: %q", b)
		}
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Fatalf("endpoint files written: %v", ents)
		}
	})
}

func TestResolveBadInput(t *testing.T) {
	isolate(t)
	t.Setenv(SocketDirEnv, t.TempDir())
	cell := func(build string) string {
		return gitRepo(t, map[string]string{"Cell.json": `{"name":"acme/broken","version":"1.0.0","build":` + build + `}`})
	}
	write := func(toml string) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Cell.toml"), []byte(toml), 0o644)
		return dir
	}
	lockOf := func(dir string) []byte { b, _ := os.ReadFile(filepath.Join(dir, "Cell.lock")); return b }
	good := exchangeRepo(t)
	for _, tc := range []struct {
		name string
		toml string
		code int
		want []string
	}{
		{"malformed Cell.toml", "[cell]\nexchange = { git = \n", ExitUsage, []string{"Cell.toml:2"}},
		{"unknown dependency field", "[cell]\nexchange = { git = \"file:///x\", colour = \"red\" }\n", ExitUsage, []string{"colour"}},
		{"tag that does not exist", fmt.Sprintf("[cell]\nexchange = { git = %q, tag = \"v9.9.9\" }\n", "file://"+good), ExitFailure, []string{"v9.9.9", "v1.0.0"}},
		{"unreachable git and no lock", "[cell]\nexchange = { git = \"file:///nonexistent/repo\", tag = \"v1\" }\n", ExitFailure, []string{"unreachable", "pins no commit"}},
		{"build that fails", fmt.Sprintf("[cell]\nbroken = { git = %q, tag = \"v1.0.0\", auto_spawn = true }\n",
			"file://"+cell(`{"command":["sh","-c","echo compiler says no >&2; exit 3"],"binary":"x"}`)), ExitFailure, []string{"build of acme/broken failed", "compiler says no"}},
		{"cell that never opens its socket", fmt.Sprintf("[cell]\nbroken = { git = %q, tag = \"v1.0.0\", auto_spawn = true }\n",
			"file://"+cell(`{"command":["sh","-c","printf '#!/bin/sh\\necho $$ > pid\\nexec sleep 60\\n' > idle && chmod +x idle"],"binary":"idle","socket":"idle.sock"}`)),
			ExitFailure, []string{"did not open", "stopped it"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := write(tc.toml)
			os.WriteFile(filepath.Join(dir, "Cell.lock"), []byte("version = 1\n"), 0o644)
			home := t.TempDir()
			code, _, stderr := run(t, "resolve", "--dir", dir, "--bootstrap", "none", "--home", home)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if !bytes.Equal(lockOf(dir), []byte("version = 1\n")) {
				t.Fatal("Cell.lock changed by a failed resolve")
			}
			if tc.name == "cell that never opens its socket" {
				pids, _ := filepath.Glob(filepath.Join(home, "builds", "*", "pid"))
				if len(pids) != 1 {
					t.Fatalf("the idle cell never ran: %v", pids)
				}
				b, _ := os.ReadFile(pids[0])
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				if pid == 0 || syscall.Kill(pid, 0) == nil {
					t.Fatalf("the idle cell (pid %d) was left running", pid)
				}
			}
		})
	}
}

// TestResolvePins: a fingerprint that changed under a pinned tag is refused
// until --update.
func TestResolvePins(t *testing.T) {
	isolate(t)
	sockDir := t.TempDir()
	t.Setenv(SocketDirEnv, sockDir)
	repo := exchangeRepo(t)
	trader := traderDir(t, repo, false)
	c, _ := gitobj.CommitCID(repo, "v1.0.0")
	lock := &project.Lock{Version: 1}
	lock.Put(project.LockedCell{Name: "exchange", Cell: "acme/exchange", Git: "file://" + repo, Tag: "v1.0.0",
		Commit: c.String(), Fingerprint: "0000000000000001"})
	if err := project.WriteLock(trader, lock); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(trader, "Cell.lock"))
	code, _, stderr := run(t, "resolve", "--dir", trader, "--bootstrap", "none")
	if code != ExitFailure || !strings.Contains(stderr, "fingerprint") || !strings.Contains(stderr, "--update") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(trader, "Cell.lock")); !bytes.Equal(before, after) {
		t.Fatal("Cell.lock changed")
	}
	// With --update the check passes; the exchange is not running, so the
	// resolve still fails, on the policy instead.
	code, _, stderr = run(t, "resolve", "--dir", trader, "--bootstrap", "none", "--update")
	if code != ExitFailure || strings.Contains(stderr, "fingerprint") || !strings.Contains(stderr, "auto_spawn is off") {
		t.Fatalf("--update: exit %d: %s", code, stderr)
	}
}
