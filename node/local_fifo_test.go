package node

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A FIFO or a huge file among the runtime directory's cells is skipped, not
// read: LocalCells must neither block nor read without bound.
func TestLocalCellsSkipsSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.json"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	big, err := os.Create(filepath.Join(dir, "big.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	big.Close()
	if err := os.WriteFile(filepath.Join(dir, "ok.json"), []byte(`{"name":"acme/x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cells := LocalCells(dir)
	if len(cells) != 1 || cells[0].Name != "acme/x" {
		t.Fatalf("LocalCells = %+v, want only the regular small file", cells)
	}
}
