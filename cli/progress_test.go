package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// termBuffer is a syncBuffer flagged as a terminal (progress.Terminal), as
// a caller with a real terminal would pass os.Stderr.
type termBuffer struct{ syncBuffer }

func (*termBuffer) IsTerminal() bool { return true }

// TestResolveBuildProgress: an auto_spawn build shows a spinner naming the
// cell on a terminal and nothing at all (no spinner, no carriage return)
// when stderr is not one. The build fails, so no cell runs; the spinner draws its first frame at once.
func TestResolveBuildProgress(t *testing.T) {
	isolate(t)
	t.Setenv(SocketDirEnv, t.TempDir())
	repo := gitRepo(t, map[string]string{"Cell.json": `{"name":"acme/slow","version":"1.0.0","build":{"command":["sh","-c","exit 3"],"binary":"x"}}`})
	toml := fmt.Sprintf("[cell]\nslow = { git = %q, tag = \"v1.0.0\", auto_spawn = true }\n", "file://"+repo)
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("terminal=%v", tty), func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "Cell.toml"), []byte(toml), 0o644)
			var out syncBuffer
			var errb termBuffer
			var stderr interface{ String() string } = &errb
			code := 0
			if tty {
				code = Run(context.Background(), []string{"resolve", "--dir", dir, "--bootstrap", "none", "--home", t.TempDir()}, &out, &errb)
			} else {
				plain := &errb.syncBuffer
				stderr = plain
				code = Run(context.Background(), []string{"resolve", "--dir", dir, "--bootstrap", "none", "--home", t.TempDir()}, &out, plain)
			}
			got := stderr.String()
			if code != ExitFailure || !strings.Contains(got, "build of acme/slow failed") {
				t.Fatalf("exit %d:\n%s", code, got)
			}
			spinner := strings.Contains(got, "cellnode: building acme/slow")
			if tty != spinner || (!tty && strings.Contains(got, "\r")) {
				t.Fatalf("terminal %v, spinner shown %v:\n%q", tty, spinner, got)
			}
		})
	}
}
