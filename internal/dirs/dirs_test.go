package dirs

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestRules(t *testing.T) {
	tmp := t.TempDir()
	uid := strconv.Itoa(os.Getuid())
	for _, tc := range []struct {
		name, own, xdg, tmpdir string
		socket, runtime        string
	}{
		{"own variables", "/own", "/run/user/7", "", "/own", "/own"},
		{"XDG", "", "/run/user/7", "", "/run/user/7/cell", "/run/user/7/cellnode"},
		{"TMPDIR", "", "", tmp, filepath.Join(tmp, "cell-"+uid), filepath.Join(tmp, "cellnode-"+uid)},
		{"nothing", "", "", "", "/tmp/cell-" + uid, "/tmp/cellnode-" + uid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(SocketEnv, tc.own)
			t.Setenv(RuntimeEnv, tc.own)
			t.Setenv(XDGRuntimeEnv, tc.xdg)
			t.Setenv("TMPDIR", tc.tmpdir)
			if got := Socket(); got != tc.socket {
				t.Errorf("Socket() = %q, want %q", got, tc.socket)
			}
			if got := Runtime(); got != tc.runtime {
				t.Errorf("Runtime() = %q, want %q", got, tc.runtime)
			}
		})
	}
	t.Setenv(HomeEnv, "/h")
	if Home() != "/h" {
		t.Errorf("Home() = %q with $%s set", Home(), HomeEnv)
	}
	t.Setenv(HomeEnv, "")
	t.Setenv("HOME", "/home/u")
	if Home() != "/home/u/.cellnode" {
		t.Errorf("Home() = %q", Home())
	}
}

func TestOwn(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Own("test", dir); err != nil {
		t.Fatalf("own 0700 directory: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := Own("test", dir); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("world-writable directory: %v", err)
	}
	f := filepath.Join(dir, "f")
	os.WriteFile(f, nil, 0o600)
	if err := Own("test", f); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("a file: %v", err)
	}
	link := filepath.Join(t.TempDir(), "l")
	os.Symlink(t.TempDir(), link)
	if err := Own("test", link); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("a symbolic link: %v", err)
	}
	if err := Own("test", filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if err := Ensure("test", filepath.Join(dir, "new", "sub")); err != nil {
		t.Fatal(err)
	}
}
