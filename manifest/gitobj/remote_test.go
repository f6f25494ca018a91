package gitobj

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// upstream is a git repository that tests use as a remote: on master, c1
// (Cell.json 0.1.0, lightweight tag v0.1.0, branch stable), c2 (Cell.json
// 0.2.0, annotated tag v0.2.0), c3 (Cell.json removed; HEAD).
type upstream struct {
	dir        string
	repo       *git.Repository
	c1, c2, c3 plumbing.Hash
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{dir: filepath.Join(t.TempDir(), "upstream")}
	var err error
	if u.repo, err = git.PlainInit(u.dir, false); err != nil {
		t.Fatal(err)
	}
	const when = "2025-01-02T03:04:05Z"
	u.c1 = commit(t, u.repo, map[string]string{manifest.FileName: cellV1, "main.go": mainGo}, "initial\n", when, when)
	u.setRef(t, "refs/tags/v0.1.0", u.c1)
	u.setRef(t, "refs/heads/stable", u.c1)
	u.c2 = commit(t, u.repo, map[string]string{manifest.FileName: cellV2}, "0.2.0\n", when, when)
	if _, err := u.repo.CreateTag("v0.2.0", u.c2, &git.CreateTagOptions{Tagger: signature(t, when), Message: "release 0.2.0"}); err != nil {
		t.Fatal(err)
	}
	wt, err := u.repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Remove(manifest.FileName); err != nil {
		t.Fatal(err)
	}
	u.c3, err = wt.Commit("no manifest\n", &git.CommitOptions{Author: signature(t, when), Committer: signature(t, when)})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (u *upstream) setRef(t *testing.T, name string, h plumbing.Hash) {
	t.Helper()
	if err := u.repo.Storer.SetReference(plumbing.NewHashReference(plumbing.ReferenceName(name), h)); err != nil {
		t.Fatal(err)
	}
}

func TestRemotesResolve(t *testing.T) {
	u := newUpstream(t)
	cacheDir := filepath.Join(t.TempDir(), "cache")
	r := NewRemotes(cacheDir)
	for _, tc := range []struct {
		name, url, tag string
		want           *plumbing.Hash
	}{
		{"HEAD", u.dir, "", &u.c3},
		{"lightweight tag", u.dir, "v0.1.0", &u.c1},
		{"annotated tag", u.dir, "v0.2.0", &u.c2},
		{"branch", u.dir, "stable", &u.c1},
		{"default branch by name", u.dir, "master", &u.c3},
		{"file URL", "file://" + u.dir, "v0.2.0", &u.c2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Resolve(t.Context(), tc.url, tc.tag)
			if err != nil || got != *tc.want {
				t.Fatalf("Resolve(%q) = %s, %v; want %s", tc.tag, got, err, *tc.want)
			}
		})
	}

	t.Run("cache layout", func(t *testing.T) {
		fi, err := os.Stat(cacheDir)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("cache dir: %v, %v; want mode 0700", fi, err)
		}
		ents, _ := os.ReadDir(cacheDir)
		if len(ents) != 2 { // the path and the file:// URL
			t.Fatalf("cache holds %d entries, want 2", len(ents))
		}
		for _, e := range ents {
			if len(e.Name()) != 16+len(".git") || !strings.HasSuffix(e.Name(), ".git") {
				t.Errorf("cache entry %q, want <16 hex>.git", e.Name())
			}
		}
	})

	t.Run("relative path", func(t *testing.T) {
		t.Chdir(filepath.Dir(u.dir))
		_, abs, _ := r.locate(u.dir)
		_, rel, _ := r.locate("upstream")
		if abs != rel {
			t.Fatalf("relative path cached at %s, absolute at %s", rel, abs)
		}
		if got, err := r.Resolve(t.Context(), "upstream", "stable"); err != nil || got != u.c1 {
			t.Fatalf("Resolve(relative) = %s, %v; want %s", got, err, u.c1)
		}
	})

	t.Run("unknown tag", func(t *testing.T) {
		_, err := r.Resolve(t.Context(), u.dir, "v9")
		if !errors.Is(err, ErrUnknownRef) || !strings.Contains(err.Error(), `"v9"`) ||
			!strings.Contains(err.Error(), "its tags are v0.1.0, v0.2.0") {
			t.Fatalf("Resolve(v9) error = %v, want ErrUnknownRef naming v9 and listing the tags", err)
		}
	})

	t.Run("invalid tag", func(t *testing.T) {
		for _, tag := range []string{"../../config", "-x", "a b", "v1^"} {
			if _, err := r.Resolve(t.Context(), u.dir, tag); !errors.Is(err, ErrUnknownRef) {
				t.Errorf("Resolve(%q) error = %v, want ErrUnknownRef", tag, err)
			}
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := r.Resolve(ctx, u.dir, "")
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnreachable) {
			t.Fatalf("Resolve(canceled) error = %v, want context.Canceled", err)
		}
	})
}

func TestRemotesTagList(t *testing.T) {
	u := newUpstream(t)
	for i := range 12 {
		u.setRef(t, "refs/tags/t"+string(rune('a'+i)), u.c1)
	}
	_, err := NewRemotes(t.TempDir()).Resolve(t.Context(), u.dir, "nope")
	want := "its tags include ta, tb, tc, td, te, tf, tg, th, ti, tj and 4 more"
	if !errors.Is(err, ErrUnknownRef) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Resolve() error = %v, want one containing %q", err, want)
	}
}

func TestRemotesFetchesUpdates(t *testing.T) {
	u := newUpstream(t)
	r := NewRemotes(t.TempDir())
	ctx := t.Context()
	if _, err := r.Resolve(ctx, u.dir, ""); err != nil {
		t.Fatal(err)
	}
	const when = "2025-02-03T04:05:06Z"
	c4 := commit(t, u.repo, map[string]string{manifest.FileName: `{"name": "acme/hello", "version": "0.4.0"}`}, "0.4.0\n", when, when)
	u.setRef(t, "refs/heads/stable", u.c2)
	u.setRef(t, "refs/tags/v0.2.0", u.c1) // moved, now lightweight
	if err := u.repo.DeleteTag("v0.1.0"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tag  string
		want plumbing.Hash
	}{{"", c4}, {"stable", u.c2}, {"v0.2.0", u.c1}} {
		if got, err := r.Resolve(ctx, u.dir, tc.tag); err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", tc.tag, got, err, tc.want)
		}
	}
	if _, err := r.Resolve(ctx, u.dir, "v0.1.0"); !errors.Is(err, ErrUnknownRef) {
		t.Errorf("Resolve(deleted tag) error = %v, want ErrUnknownRef", err)
	}
	if m, err := r.Manifest(u.dir, c4); err != nil || m.Version != "0.4.0" {
		t.Errorf("Manifest(c4) = %+v, %v", m, err)
	}

	// HEAD follows the remote's default branch.
	if err := u.repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/stable")); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Resolve(ctx, u.dir, ""); err != nil || got != u.c2 {
		t.Errorf("Resolve(HEAD on stable) = %s, %v; want %s", got, err, u.c2)
	}
}

func TestRemotesUnreachable(t *testing.T) {
	r := NewRemotes(t.TempDir())
	missing := filepath.Join(t.TempDir(), "missing")
	for _, url := range []string{missing, "file://" + missing} {
		h, err := r.Resolve(t.Context(), url, "v1")
		if !errors.Is(err, ErrUnreachable) || !h.IsZero() {
			t.Errorf("Resolve(%s) = %s, %v; want ErrUnreachable", url, h, err)
		}
		if _, err := r.Repo(url); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Repo(%s) after a failed first fetch: %v, want fs.ErrNotExist", url, err)
		}
	}

	// An empty remote is reachable, but has nothing to resolve.
	empty := filepath.Join(t.TempDir(), "empty")
	if _, err := git.PlainInit(empty, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(t.Context(), empty, ""); !errors.Is(err, ErrNoCommits) || errors.Is(err, ErrUnreachable) {
		t.Errorf("Resolve(empty remote) error = %v, want ErrNoCommits", err)
	}

	// Once cached, the remote going away still says ErrUnreachable, with
	// what the cache knows.
	u := newUpstream(t)
	if _, err := r.Resolve(t.Context(), u.dir, "v0.2.0"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(u.dir); err != nil {
		t.Fatal(err)
	}
	h, err := r.Resolve(t.Context(), u.dir, "v0.2.0")
	if !errors.Is(err, ErrUnreachable) || h != u.c2 {
		t.Fatalf("Resolve(gone) = %s, %v; want %s and ErrUnreachable", h, err, u.c2)
	}
	if m, err := r.Manifest(u.dir, u.c2); err != nil || m.Version != "0.2.0" {
		t.Errorf("Manifest from the cache = %+v, %v", m, err)
	}
}

func TestRemotesManifest(t *testing.T) {
	u := newUpstream(t)
	r := NewRemotes(t.TempDir())
	if _, err := r.Manifest(u.dir, u.c1); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Manifest before Resolve: %v, want fs.ErrNotExist", err)
	}
	if _, err := r.Resolve(t.Context(), u.dir, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		commit  plumbing.Hash
		version string
		wantErr error
	}{
		{"first", u.c1, "0.1.0", nil},
		{"second", u.c2, "0.2.0", nil},
		{"no Cell.json", u.c3, "", ErrNoManifest},
		{"unknown commit", plumbing.NewHash("0123456789abcdef0123456789abcdef01234567"), "", plumbing.ErrObjectNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := r.Manifest(u.dir, tc.commit)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Manifest() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || m.Name != "acme/hello" || m.Version != tc.version {
				t.Fatalf("Manifest() = %+v, %v; want version %s", m, err, tc.version)
			}
		})
	}
	repo, err := r.Repo(u.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CommitObject(u.c1); err != nil {
		t.Errorf("Repo() lacks c1: %v", err)
	}
}

func TestRemotesCheckout(t *testing.T) {
	u := newUpstream(t)
	r := NewRemotes(t.TempDir())
	target := filepath.Join(t.TempDir(), "hello")
	if err := r.Checkout(u.dir, u.c2, target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Checkout before Resolve: %v, want fs.ErrNotExist", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a failed Checkout left %s", target)
	}
	if _, err := r.Resolve(t.Context(), u.dir, ""); err != nil {
		t.Fatal(err)
	}

	if err := r.Checkout(u.dir, u.c2, target); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(target, manifest.FileName)); err != nil || string(b) != cellV2 {
		t.Errorf("checked-out %s = %q, %v; want %q", manifest.FileName, b, err, cellV2)
	}
	if m, err := manifest.Load(target); err != nil || m.Version != "0.2.0" {
		t.Errorf("Load(checkout) = %+v, %v", m, err)
	}
	repo, err := git.PlainOpen(target)
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Head()
	if err != nil || head.Name() != "refs/heads/main" || head.Hash() != u.c2 {
		t.Errorf("HEAD = %v, %v; want refs/heads/main at %s", head, err, u.c2)
	}
	if dirty, err := Dirty(target); err != nil || dirty {
		t.Errorf("Dirty(checkout) = %v, %v", dirty, err)
	}
	if rem, err := repo.Remote("origin"); err != nil || rem.Config().URLs[0] != u.dir {
		t.Errorf("origin = %v, %v; want %s", rem, err, u.dir)
	}
	if ents, _ := os.ReadDir(filepath.Dir(target)); len(ents) != 1 {
		t.Errorf("Checkout left %d entries next to the target, want 1", len(ents))
	}

	t.Run("non-empty target", func(t *testing.T) {
		err := r.Checkout(u.dir, u.c1, target)
		if !errors.Is(err, ErrTargetNotEmpty) {
			t.Fatalf("Checkout(non-empty) error = %v, want ErrTargetNotEmpty", err)
		}
		if b, _ := os.ReadFile(filepath.Join(target, manifest.FileName)); string(b) != cellV2 {
			t.Errorf("refused Checkout changed %s", manifest.FileName)
		}
	})
	t.Run("file target", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		writeFile(t, f, "x")
		if err := r.Checkout(u.dir, u.c1, f); !errors.Is(err, ErrTargetNotEmpty) {
			t.Fatalf("Checkout(file) error = %v, want ErrTargetNotEmpty", err)
		}
	})
	t.Run("empty target directory", func(t *testing.T) {
		empty := t.TempDir()
		if err := r.Checkout(u.dir, u.c1, empty); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(empty, manifest.FileName)); string(b) != cellV1 {
			t.Errorf("checked-out %s = %q, want %q", manifest.FileName, b, cellV1)
		}
	})
	t.Run("unknown commit", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "x")
		err := r.Checkout(u.dir, plumbing.NewHash("0123456789abcdef0123456789abcdef01234567"), dst)
		if !errors.Is(err, plumbing.ErrObjectNotFound) {
			t.Fatalf("Checkout(unknown) error = %v, want plumbing.ErrObjectNotFound", err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("failed Checkout left %s", dst)
		}
	})
}

func TestRemotesConcurrent(t *testing.T) {
	u := newUpstream(t)
	r := NewRemotes(t.TempDir())
	if _, err := r.Resolve(t.Context(), u.dir, ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			if h, err := r.Resolve(t.Context(), u.dir, "v0.2.0"); err != nil || h != u.c2 {
				errs <- fmt.Errorf("Resolve = %s, %v", h, err)
			}
		})
		wg.Go(func() {
			if _, err := r.Manifest(u.dir, u.c1); err != nil {
				errs <- fmt.Errorf("Manifest: %v", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
