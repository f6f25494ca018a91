package progress

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/creack/pty"
)

// TestQuietOffTerminal: a pipe, a file and a buffer get nothing.
func TestQuietOffTerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, out := range []io.Writer{w, f, &buf, nil} {
		if IsTerminal(out) {
			t.Fatalf("%T taken for a terminal", out)
		}
		b := Spinner(out, "building acme/x")
		b.Done()
		b.Done()
	}
	w.Close()
	if got, _ := io.ReadAll(r); len(got) != 0 {
		t.Fatalf("a pipe got %q", got)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatalf("a file got %d bytes", fi.Size())
	}
	if buf.Len() != 0 {
		t.Fatalf("a buffer got %q", buf.String())
	}
}

// TestSpinnerOnPTY: on a real terminal (a pty) the spinner names what is
// under way, and Done clears its line.
func TestSpinnerOnPTY(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if !IsTerminal(tty) {
		t.Fatal("a pty is not taken for a terminal")
	}
	got := make(chan string, 1)
	go func() {
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			all.Write(buf[:n])
			if strings.Contains(all.String(), "building acme/x") || err != nil {
				got <- all.String()
				return
			}
		}
	}()
	b := Spinner(tty, "building acme/x")
	out := <-got
	b.Done()
	if !strings.Contains(out, "cellnode: building acme/x") {
		t.Fatalf("the terminal got %q", out)
	}
}

// fakeTerm is a buffer flagged as a terminal, as a caller injects one.
type fakeTerm struct{ bytes.Buffer }

func (*fakeTerm) IsTerminal() bool { return true }

func TestInjectedTerminal(t *testing.T) {
	var w fakeTerm
	b := Spinner(&w, "cloning bafy")
	// The first frame is drawn at once (blank state rendered).
	b.Done()
	if !strings.Contains(w.String(), "cloning bafy") {
		t.Fatalf("got %q", w.String())
	}
}
