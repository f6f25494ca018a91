package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDelegationSpecialFiles: --delegation and --key given /dev/zero, a
// FIFO or a huge file fail at once with a clear error (the issue's
// --delegation /dev/zero read 20 GB, and a FIFO hung).
func TestDelegationSpecialFiles(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	os.WriteFile(huge, make([]byte, maxKeyFile+1), 0o600)
	for _, path := range []string{"/dev/zero", fifo, huge} {
		code, _, stderr := run(t, "run", "--name", "acme/exchange", "--endpoint", "127.0.0.1:9", "--delegation", path)
		if code != ExitUsage || !strings.Contains(stderr, "--delegation") || !strings.Contains(stderr, path) {
			t.Errorf("run --delegation %s: exit %d, %s", path, code, stderr)
		}
		code, _, stderr = run(t, "key", "delegate", "--key", path, "--name", "acme/exchange", "--node", "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7")
		if code != ExitUsage || !strings.Contains(stderr, path) {
			t.Errorf("key delegate --key %s: exit %d, %s", path, code, stderr)
		}
	}
}
