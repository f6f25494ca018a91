package bootstrap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cellnode/cellnode/internal/safefile"
)

// TestStoreSpecialFiles: a peers.json that is a FIFO, a device or a huge
// file is refused at once with an error naming it, never read without end
// or waited on.
func TestStoreSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.json")
	if err := os.WriteFile(huge, []byte(`{"version":1,"peers":[`+strings.Repeat(" ", maxStoreFile)+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want error
	}{{fifo, safefile.ErrNotRegular}, {"/dev/zero", safefile.ErrNotRegular}, {huge, safefile.ErrTooLarge}} {
		_, err := NewStore(c.path).Load()
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: err = %v, want %v", c.path, err, c.want)
		}
	}
}
