package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "ok")
	os.WriteFile(regular, []byte("hello"), 0o600)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 100), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(regular, link)
	cases := []struct {
		name, path string
		want       error
	}{
		{"regular", regular, nil},
		{"symlink to regular", link, nil},
		{"too large", big, ErrTooLarge},
		{"fifo does not block", fifo, ErrNotRegular},
		{"directory", dir, ErrNotRegular},
		{"/dev/zero is not read", "/dev/zero", ErrNotRegular},
		{"missing", filepath.Join(dir, "none"), fs.ErrNotExist},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := ReadFile(c.path, 10)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if c.want == nil && string(b) != "hello" {
				t.Fatalf("read %q", b)
			}
			if err != nil && c.want != fs.ErrNotExist && !strings.Contains(err.Error(), c.path) {
				t.Fatalf("error %q does not name %s", err, c.path)
			}
		})
	}
}

func TestCheckDir(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode) // past the umask
		return p
	}
	if err := CheckDir("home", mk("private", 0o700)); err != nil {
		t.Fatal(err)
	}
	if err := CheckDir("home", mk("readable", 0o755)); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o777, 0o770, 0o702, 0o1777} {
		p := mk(fmt.Sprintf("open%o", mode), mode)
		err := CheckDir("home", p)
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod") {
			t.Errorf("mode %o: err = %v", mode, err)
		}
	}
	f := filepath.Join(base, "file")
	os.WriteFile(f, nil, 0o600)
	if err := CheckDir("home", f); !errors.Is(err, ErrUnsafe) {
		t.Errorf("a file: err = %v", err)
	}
	if os.Getuid() == 0 {
		other := mk("other", 0o700)
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		err := CheckDir("home", other)
		if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "uid 65534") {
			t.Errorf("another user's directory: err = %v", err)
		}
	}
	// EnsureDir creates what is missing with 0700.
	p := filepath.Join(base, "new", "deeper")
	if err := EnsureDir("home", p); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o700 {
		t.Fatalf("created with %v", fi.Mode().Perm())
	}
	if err := EnsureDir("home", mk("open", 0o777)); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("EnsureDir on an open directory: %v", err)
	}
}

func TestCheckSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := CheckSocket("API socket", sock); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	os.Symlink(sock, link)
	if err := CheckSocket("API socket", link); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("symlink: %v", err)
	}
	if os.Getuid() == 0 {
		if err := os.Lchown(sock, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := CheckSocket("API socket", sock); !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "uid 65534") {
			t.Fatalf("another user's socket: %v", err)
		}
		os.Lchown(sock, 0, 0)
	}
	os.Chmod(dir, 0o777)
	if err := CheckSocket("API socket", sock); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("socket in an open directory: %v", err)
	}
}

// TestWriteNewRace: of many writers racing to create one file, exactly one
// wins, and every reader sees the winner's whole content.
func TestWriteNewRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = WriteNew(path, []byte(fmt.Sprintf("writer %02d", i)), 0o600)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, fs.ErrExist):
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	if won != 1 || !strings.HasPrefix(string(b), "writer ") || len(b) != 9 {
		t.Fatalf("%d winners, file %q", won, b)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

// TestWriteFile: WriteFile creates or replaces a file with the given mode
// and leaves no temporary file; a failed write leaves the old file whole.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := WriteFile(path, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "two\n" {
		t.Fatalf("content %q, %v; want \"two\\n\"", b, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", fi.Mode(), err)
	}
	// A directory in the way: the rename fails, nothing else changes.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(sub, []byte("three\n"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("WriteFile into a missing directory: %v, want fs.ErrNotExist", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Fatalf("directory holds %v, want only state and sub", ents)
	}
	if b, _ := os.ReadFile(path); string(b) != "two\n" {
		t.Fatalf("content %q after failed writes", b)
	}
}
