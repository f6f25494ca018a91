package skeleton

import (
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/manifest"
)

func testCell() Cell {
	return Cell{Name: "acme/hello", Publisher: make(ed25519.PublicKey, ed25519.PublicKeySize), KeyPath: "/k/acme-hello.key", Home: "/h"}
}

var socketDirFunc = regexp.MustCompile(`(?s)func socketDir\(\) string \{.*?\n\}\n`)

// TestSocketDirAgrees holds the socket-directory rule of the skeleton's
// service, of the example cells and of the README's shell line to
// dirs.Socket, for each combination of the variables it reads.
func TestSocketDirAgrees(t *testing.T) {
	files, err := Files(testCell())
	if err != nil {
		t.Fatal(err)
	}
	fn := socketDirFunc.FindString(files["main.go"])
	if fn == "" {
		t.Fatalf("the skeleton's main.go has no socketDir:\n%s", files["main.go"])
	}
	for _, ex := range []string{"exchange", "trader"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", ex, "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if got := socketDirFunc.FindString(string(b)); got != fn {
			t.Fatalf("examples/%s/main.go: socketDir differs from the skeleton's:\n%s\nwant:\n%s", ex, got, fn)
		}
	}
	var sh string
	for line := range strings.SplitSeq(files["README.md"], "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "sockets=") {
			sh = l
		}
	}
	if sh == "" || !strings.Contains(files["README.md"], "--endpoint unix:$sockets/hello.sock") {
		t.Fatalf("README: no sockets= line, or the run line does not use it:\n%s", files["README.md"])
	}

	// One program holding the copied function, run under each environment.
	src := t.TempDir()
	prog := "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n\t\"path/filepath\"\n\t\"strconv\"\n)\n\n" + fn +
		"\nfunc main() { fmt.Print(socketDir()) }\n"
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(src, "probe")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tmp := t.TempDir()
	for _, tc := range []struct{ name, sock, xdg, tmpdir string }{
		{"socket dir set", "/s/cells", "/run/user/7", ""},
		{"socket dir only", "/s/cells", "", ""},
		{"XDG only", "", "/run/user/7", ""},
		{"nothing", "", "", ""},
		{"TMPDIR only", "", "", tmp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(dirs.SocketEnv, tc.sock)
			t.Setenv(dirs.XDGRuntimeEnv, tc.xdg)
			t.Setenv("TMPDIR", tc.tmpdir)
			want := dirs.Socket()
			out, err := exec.Command(bin).Output()
			if err != nil || string(out) != want {
				t.Errorf("skeleton and examples: %q (%v), dirs.Socket: %q", out, err, want)
			}
			out, err = exec.Command("sh", "-c", sh+`; printf %s "$sockets"`).Output()
			if err != nil || string(out) != want {
				t.Errorf("README %q: %q (%v), dirs.Socket: %q", sh, out, err, want)
			}
		})
	}
}

func TestFilesLoad(t *testing.T) {
	files, err := Files(testCell())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Parse([]byte(files[manifest.FileName])); err != nil {
		t.Fatalf("Cell.json: %v", err)
	}
	if strings.Contains(files["main.go"], "NAME") || strings.Contains(files["README.md"], "{{") {
		t.Fatal("a placeholder is left")
	}
	if _, err := Files(Cell{Name: "hello"}); err == nil {
		t.Fatal("a name without an org was accepted")
	}
}

func TestWriteRefusesNonEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, testCell()); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Write into a non-empty directory: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("Write touched the directory: %d entries", len(ents))
	}
	dir = filepath.Join(t.TempDir(), "hello")
	if err := Write(dir, testCell()); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Load(dir); err != nil {
		t.Fatal(err)
	}
}
