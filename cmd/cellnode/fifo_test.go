package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFindFIFOPeersFile: issue 15's sigtest as a test. `find` with a FIFO
// as the home's peers.json used to block opening it for good, ignoring
// SIGTERM; now it warns that it ignores the file at once, and the first
// SIGTERM (or its own end) stops it. A hang here fails by the test's
// timeout: the warning is never written. (The bootstrap peer is a closed
// port: with --bootstrap none, find does not read peers.json.)
func TestFindFIFOPeersFile(t *testing.T) {
	home := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(home, "peers.json"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	args := "find acme/exchange --home " + home + " --bootstrap /ip4/127.0.0.1/tcp/1/p2p/12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7 --timeout 5s"
	p := start(t, "CELLNODE_MAIN_TEST=main", "CELLNODE_MAIN_ARGS="+args, "CELLNODE_RUNTIME_DIR="+t.TempDir())
	p.waitLine(t, "ignoring peers seen before")
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.wait(t)
	if out := p.all.String(); !strings.Contains(out, "named pipe") {
		t.Fatalf("the warning does not say why:\n%s", out)
	}
}
