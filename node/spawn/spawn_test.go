package spawn

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/safefile"
)

// serve listens on a unix socket at path, accepting and closing, until the
// test ends.
func serve(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func socketDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "spawn") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o700)
	t.Setenv(dirs.SocketEnv, dir)
	return dir
}

func TestProbe(t *testing.T) {
	dir := socketDir(t)
	ctx := context.Background()
	if _, _, ok, err := Probe(ctx, "none.sock"); ok || err != nil {
		t.Fatalf("nothing there: ok %v, err %v", ok, err)
	}
	serve(t, filepath.Join(dir, "x.sock"))
	ep, _, ok, err := Probe(ctx, "x.sock")
	if !ok || err != nil || ep != "unix://x.sock" {
		t.Fatalf("a live socket: %q ok %v err %v", ep, ok, err)
	}
	os.Chmod(dir, 0o777)
	defer os.Chmod(dir, 0o700)
	if _, _, ok, err := Probe(ctx, "x.sock"); ok || !errors.Is(err, safefile.ErrUnsafe) {
		t.Fatalf("a directory others can write to: ok %v, err %v", ok, err)
	}
}

func TestStateAndListRunning(t *testing.T) {
	dir := socketDir(t)
	t.Setenv(dirs.RuntimeEnv, t.TempDir())
	home := t.TempDir()
	live := Cell{Name: "live", Cell: "acme/live", PID: os.Getpid(), Socket: filepath.Join(dir, "live.sock"), Commit: "bafA"}
	dead := Cell{Name: "dead", Cell: "acme/dead", PID: 1 << 30, Socket: filepath.Join(dir, "dead.sock")}
	for _, c := range []Cell{live, dead} {
		if err := Write(home, c); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(home, StateDir, "junk.json"), []byte("{"), 0o600)
	if got := List(home); len(got) != 2 {
		t.Fatalf("List: %+v", got)
	}
	serve(t, filepath.Join(dir, "live.sock"))
	serve(t, filepath.Join(dir, "other.sock"))
	rows := ListRunning(context.Background(), home)
	if len(rows) != 2 || rows[0].Name != "acme/live" || rows[0].Source != "spawned by resolve" || rows[0].Manifest != "bafA" ||
		rows[1].Name != "other" || rows[1].Source != "socket" {
		t.Fatalf("ListRunning: %+v", rows)
	}
}

func TestStartBadSpec(t *testing.T) {
	if _, _, err := Start(context.Background(), Spec{Name: "x"}); err == nil {
		t.Fatal("a spec without a manifest started")
	}
}
