package resolve

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/manifest"
)

func TestFilter(t *testing.T) {
	f, err := NewFilter("0x009F2C", ">=1.2, <2")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fp, version string
		want        bool
	}{{"9f2c", "1.2.0", true}, {"09F2C", "1.9.9", true}, {"9f2d", "1.2.0", false}, {"9f2c", "2.0.0", false}, {"9f2c", "junk", false}} {
		if got := f.Match(&manifest.Manifest{Fingerprint: c.fp, Version: c.version}); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.fp, c.version, got, c.want)
		}
	}
	if !(Filter{}).Empty() || f.Empty() {
		t.Fatal("Empty")
	}
	for _, bad := range [][2]string{{"xyz", ""}, {"12345678901234567", ""}, {"", "not a range"}} {
		if _, err := NewFilter(bad[0], bad[1]); err == nil {
			t.Errorf("NewFilter(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// TestRunInput: a Cell.toml that does not load and a bad format are
// InputErrors, and nothing is written.
func TestRunInput(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, project.DepsFile), []byte("[cell\n"), 0o644)
	cfg := Config{Dir: dir, Home: t.TempDir()}
	var in *InputError
	if err := Run(context.Background(), cfg); !errors.As(err, &in) {
		t.Fatalf("bad Cell.toml: %v", err)
	}
	cfg.Format = "yaml"
	if err := Run(context.Background(), cfg); !errors.As(err, &in) {
		t.Fatalf("bad format: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, project.LockFile)); err == nil {
		t.Fatal("Cell.lock written")
	}
}

func TestGoIdent(t *testing.T) {
	for in, want := range map[string]string{"exchange": "Exchange", "order-book": "OrderBook", "9lives": "Cell9lives"} {
		if got := goIdent(in); got != want {
			t.Errorf("goIdent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckManifest(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	m := &manifest.Manifest{Name: "acme/x", Publishers: []string{base64.StdEncoding.EncodeToString(pub)}}
	if err := CheckManifest(m, "acme/x", nil); err != nil {
		t.Fatalf("nothing pinned: %v", err)
	}
	if err := CheckManifest(m, "acme/x", []ed25519.PublicKey{pub}); err != nil {
		t.Fatalf("pinned publisher listed: %v", err)
	}
	if err := CheckManifest(m, "acme/x", []ed25519.PublicKey{other}); err == nil {
		t.Fatal("a manifest without the pinned publisher passed")
	}
	if err := CheckManifest(m, "acme/y", nil); err == nil {
		t.Fatal("a manifest naming another cell passed")
	}
}
