package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra/doc"
)

// cliRefDir holds the CLI reference, generated from the commands.
const cliRefDir = "../docs/cli"

// TestCLIReference: docs/cli is what cobra's doc generator makes of the
// commands now. CELLNODE_UPDATE_DOCS=1 go test ./cli -run TestCLIReference
// rewrites it.
func TestCLIReference(t *testing.T) {
	gen := t.TempDir()
	root := newRoot(&env{stdout: io.Discard, stderr: io.Discard})
	root.InitDefaultCompletionCmd()
	root.DisableAutoGenTag = true
	if err := doc.GenMarkdownTree(root, gen); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("CELLNODE_UPDATE_DOCS") == "1" {
		os.RemoveAll(cliRefDir)
		if err := os.CopyFS(cliRefDir, os.DirFS(gen)); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, _ := filepath.Glob(filepath.Join(gen, "*.md"))
	have, _ := filepath.Glob(filepath.Join(cliRefDir, "*.md"))
	base := func(ps []string) []string {
		var out []string
		for _, p := range ps {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !slices.Equal(base(want), base(have)) {
		t.Fatalf("docs/cli has %v, the commands make %v; run CELLNODE_UPDATE_DOCS=1 go test ./cli -run TestCLIReference", base(have), base(want))
	}
	for _, p := range want {
		w, _ := os.ReadFile(p)
		h, _ := os.ReadFile(filepath.Join(cliRefDir, filepath.Base(p)))
		if !bytes.Equal(w, h) {
			t.Errorf("docs/cli/%s is out of date; run CELLNODE_UPDATE_DOCS=1 go test ./cli -run TestCLIReference", filepath.Base(p))
		}
	}
}
