package gitobj

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// The golden repository; testdata/golden.sh builds the same one with the
// git CLI.
const (
	cellV1 = `{"name": "acme/hello", "version": "0.1.0", "build": {"command": ["go", "build", "-o", "hello", "."], "binary": "hello"}}` + "\n"
	cellV2 = `{"name": "acme/hello", "version": "0.2.0", "build": {"command": ["go", "build", "-o", "hello", "."], "binary": "hello"}}` + "\n"
	mainGo = "package main\n\nfunc main() {}\n"
)

func signature(t *testing.T, date string) *object.Signature {
	t.Helper()
	when, err := time.Parse(time.RFC3339, date)
	if err != nil {
		t.Fatal(err)
	}
	return &object.Signature{Name: "Ada Lovelace", Email: "ada@example.com", When: when}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// commit stages files (name → content) and commits them.
func commit(t *testing.T, r *git.Repository, files map[string]string, msg, author, committer string) plumbing.Hash {
	t.Helper()
	wt, err := r.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		writeFile(t, filepath.Join(wt.Filesystem.Root(), name), content)
		if _, err := wt.Add(name); err != nil {
			t.Fatal(err)
		}
	}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: signature(t, author), Committer: signature(t, committer)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// goldenRepo builds the golden repository in a new directory.
func goldenRepo(t *testing.T) (string, *git.Repository) {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	// The git CLI ends -m messages with a newline.
	first := commit(t, r, map[string]string{manifest.FileName: cellV1, "main.go": mainGo}, "initial\n",
		"2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05+02:00")
	commit(t, r, map[string]string{manifest.FileName: cellV2}, "bump version to 0.2.0\n",
		"2024-02-03T04:05:06+02:00", "2024-02-04T05:06:07-05:00")
	_, err = r.CreateTag("v0.1.0", first, &git.CreateTagOptions{
		Tagger: signature(t, "2024-01-03T10:00:00+05:30"), Message: "release 0.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	return dir, r
}

type golden struct {
	Commits map[string]struct {
		SHA1 string `json:"sha1"`
		CID  string `json:"cid"`
	} `json:"commits"`
	TagObjects map[string]string `json:"tag_objects"`
}

func TestGoldenCIDs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "golden_cids.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Commits) != 3 || len(g.TagObjects) != 1 {
		t.Fatalf("golden file has %d commits and %d tags, want 3 and 1", len(g.Commits), len(g.TagObjects))
	}
	dir, r := goldenRepo(t)
	for tag, sha1 := range g.TagObjects {
		ref, err := r.Tag(tag)
		if err != nil || ref.Hash().String() != sha1 {
			t.Errorf("tag object %s = %v, %v; want %s (go-git and git CLI repositories differ)", tag, ref, err, sha1)
		}
	}
	for ref, want := range g.Commits {
		t.Run(ref, func(t *testing.T) {
			c, err := CommitCID(dir, ref)
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != want.CID {
				t.Errorf("CommitCID(%q) = %s, want %s", ref, c, want.CID)
			}
			if got := manifest.CIDOf(plumbing.NewHash(want.SHA1)).String(); got != want.CID {
				t.Errorf("CIDOf(%s) = %s, want %s", want.SHA1, got, want.CID)
			}
			h, err := manifest.HashOf(c)
			if err != nil || h.String() != want.SHA1 {
				t.Errorf("HashOf(%s) = %s, %v; want %s", c, h, err, want.SHA1)
			}
		})
	}
}

func TestCommitCID(t *testing.T) {
	dir, r := goldenRepo(t)
	head, err := r.Head()
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.ResolveRevision("HEAD~1")
	if err != nil {
		t.Fatal(err)
	}
	tagRef, err := r.Tag("v0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.CommitObject(head.Hash())
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub", "dir")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := r.Storer.SetReference(plumbing.NewHashReference("refs/tags/tree", c.TreeHash)); err != nil {
		t.Fatal(err)
	}
	if err := r.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName(first.String()[:3]), head.Hash())); err != nil {
		t.Fatal(err)
	}
	// A merge of HEAD and HEAD~1, reachable as branch "merge".
	merge := &object.Commit{Author: *signature(t, "2024-03-01T00:00:00Z"), Message: "merge\n",
		TreeHash: c.TreeHash, ParentHashes: []plumbing.Hash{head.Hash(), *first}}
	merge.Committer = merge.Author
	o := r.Storer.NewEncodedObject()
	if err := merge.Encode(o); err != nil {
		t.Fatal(err)
	}
	mergeHash, err := r.Storer.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Storer.SetReference(plumbing.NewHashReference(plumbing.NewBranchReferenceName("merge"), mergeHash)); err != nil {
		t.Fatal(err)
	}
	hh, fh := head.Hash().String(), first.String()

	tests := []struct {
		name, dir, ref string
		want           plumbing.Hash
		wantErr        error
		errText        string
	}{
		{name: "empty is HEAD", dir: dir, ref: "", want: head.Hash()},
		{name: "HEAD", dir: dir, ref: "HEAD", want: head.Hash()},
		{name: "from subdirectory", dir: sub, ref: "", want: head.Hash()},
		{name: "branch", dir: dir, ref: "master", want: head.Hash()},
		{name: "full branch ref", dir: dir, ref: "refs/heads/master", want: head.Hash()},
		{name: "annotated tag", dir: dir, ref: "v0.1.0", want: *first},
		{name: "full tag ref", dir: dir, ref: "refs/tags/v0.1.0", want: *first},
		{name: "tag object hash", dir: dir, ref: tagRef.Hash().String(), want: *first},
		{name: "HEAD~1", dir: dir, ref: "HEAD~1", want: *first},
		{name: "HEAD^", dir: dir, ref: "HEAD^", want: *first},
		{name: "HEAD^0", dir: dir, ref: "HEAD^0", want: head.Hash()},
		{name: "@", dir: dir, ref: "@", want: head.Hash()},
		{name: "tag~0", dir: dir, ref: "v0.1.0~0", want: *first},
		{name: "merge", dir: dir, ref: "merge", want: mergeHash},
		{name: "merge^1", dir: dir, ref: "merge^1", want: head.Hash()},
		{name: "merge^2", dir: dir, ref: "merge^2", want: *first},
		{name: "merge~2", dir: dir, ref: "merge~2", want: *first},
		{name: "merge^^", dir: dir, ref: "merge^^", want: *first},
		{name: "hash~1", dir: dir, ref: hh[:8] + "~1", want: *first},
		{name: "long hash", dir: dir, ref: fh, want: *first},
		{name: "upper-case hash", dir: dir, ref: strings.ToUpper(hh), want: head.Hash()},
		{name: "short hash", dir: dir, ref: fh[:7], want: *first},
		{name: "odd short hash", dir: dir, ref: hh[:5], want: head.Hash()},
		{name: "ref before 3-digit hash", dir: dir, ref: fh[:3], want: head.Hash()},

		{name: "unknown ref", dir: dir, ref: "nope", wantErr: ErrUnknownRef, errText: `unknown revision "nope" (repository ` + dir + ")"},
		{name: "beyond history", dir: dir, ref: "HEAD~5", wantErr: ErrUnknownRef, errText: "has no parent 1"},
		{name: "no second parent", dir: dir, ref: "HEAD^2", wantErr: ErrUnknownRef, errText: "has no parent 2"},
		{name: "path syntax", dir: dir, ref: "HEAD:" + manifest.FileName, wantErr: ErrUnknownRef},
		{name: "reflog syntax", dir: dir, ref: "HEAD@{1}", wantErr: ErrUnknownRef},
		{name: "peel syntax", dir: dir, ref: "HEAD^{tree}", wantErr: ErrUnknownRef, errText: "unsupported syntax"},
		{name: "range syntax", dir: dir, ref: "HEAD~1..HEAD", wantErr: ErrUnknownRef},
		{name: "no base", dir: dir, ref: "~1", wantErr: ErrUnknownRef},
		{name: "too short hash", dir: dir, ref: hh[:2], wantErr: ErrUnknownRef},
		{name: "unknown hash", dir: dir, ref: strings.Repeat("0", 40), wantErr: ErrUnknownRef},
		{name: "tree", dir: dir, ref: "tree", wantErr: ErrUnknownRef, errText: "names a tree, not a commit"},
		{name: "blob hash", dir: dir, ref: plumbing.ComputeHash(plumbing.BlobObject, []byte(cellV2)).String(), wantErr: ErrUnknownRef},
		{name: "not a repo", dir: t.TempDir(), wantErr: ErrNotRepo},
		{name: "missing dir", dir: filepath.Join(dir, "missing"), wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantErr == ErrNotRepo && inRepo(filepath.Dir(tt.dir)) {
				t.Skip("the temporary directory is inside a git repository")
			}
			got, err := CommitCID(tt.dir, tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("CommitCID() error = %v, want %v containing %q", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := manifest.CIDOf(tt.want); !got.Equals(want) {
				t.Errorf("CommitCID() = %s, want %s", got, want)
			}
		})
	}
}

func inRepo(dir string) bool {
	_, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	return err == nil
}

func TestCommitCIDAmbiguous(t *testing.T) {
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	// Store two commits that share a 4-digit prefix, found among about 300
	// candidates by the birthday bound (the sequence is deterministic).
	seen := make(map[string]plumbing.EncodedObject)
	var prefix string
	for i := 0; prefix == ""; i++ {
		c := &object.Commit{Author: *signature(t, "2024-01-02T03:04:05Z"), Message: fmt.Sprint(i),
			TreeHash: plumbing.ComputeHash(plumbing.TreeObject, nil)}
		c.Committer = c.Author
		o := r.Storer.NewEncodedObject()
		if err := c.Encode(o); err != nil {
			t.Fatal(err)
		}
		p := o.Hash().String()[:4]
		if other, ok := seen[p]; ok {
			for _, o := range []plumbing.EncodedObject{other, o} {
				if _, err := r.Storer.SetEncodedObject(o); err != nil {
					t.Fatal(err)
				}
			}
			prefix = p
		}
		seen[p] = o
	}
	_, err = CommitCID(dir, prefix)
	if !errors.Is(err, ErrAmbiguousRef) || !strings.Contains(err.Error(), prefix) {
		t.Fatalf("CommitCID(%q) error = %v, want ErrAmbiguousRef", prefix, err)
	}
}

func TestCommitCIDRepoErrors(t *testing.T) {
	t.Run("no commits", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := git.PlainInit(dir, false); err != nil {
			t.Fatal(err)
		}
		if _, err := CommitCID(dir, ""); !errors.Is(err, ErrNoCommits) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("CommitCID() error = %v, want ErrNoCommits naming %s", err, dir)
		}
	})
	t.Run("sha256 config", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := git.PlainInit(dir, false); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, ".git", "config"),
			"[core]\n\trepositoryformatversion = 1\n\tbare = false\n[extensions]\n\tobjectformat = sha256\n")
		if _, err := CommitCID(dir, ""); !errors.Is(err, ErrSHA256Repo) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("CommitCID() error = %v, want ErrSHA256Repo naming %s", err, dir)
		}
	})
	t.Run("sha256 git CLI", func(t *testing.T) {
		if _, err := exec.LookPath("git"); err != nil {
			t.Skip("git not on PATH")
		}
		dir := t.TempDir()
		cmd := exec.Command("git", "init", "-q", "--object-format=sha256", dir)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("git init --object-format=sha256: %v: %s", err, out)
		}
		if _, err := CommitCID(dir, ""); !errors.Is(err, ErrSHA256Repo) {
			t.Fatalf("CommitCID() error = %v, want ErrSHA256Repo", err)
		}
	})
}

func TestDirty(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string, r *git.Repository) string // returns the directory to check
		want  bool
	}{
		{name: "clean", want: false},
		{name: "other file modified", want: false, setup: func(t *testing.T, dir string, _ *git.Repository) string {
			writeFile(t, filepath.Join(dir, "main.go"), "package main\n")
			return dir
		}},
		{name: "modified", want: true, setup: func(t *testing.T, dir string, _ *git.Repository) string {
			writeFile(t, filepath.Join(dir, manifest.FileName), cellV1)
			return dir
		}},
		{name: "deleted", want: true, setup: func(t *testing.T, dir string, _ *git.Repository) string {
			if err := os.Remove(filepath.Join(dir, manifest.FileName)); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{name: "staged then reverted", want: true, setup: func(t *testing.T, dir string, r *git.Repository) string {
			writeFile(t, filepath.Join(dir, manifest.FileName), cellV1)
			wt, _ := r.Worktree()
			if _, err := wt.Add(manifest.FileName); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, manifest.FileName), cellV2)
			return dir
		}},
		{name: "untracked in subdirectory", want: true, setup: func(t *testing.T, dir string, _ *git.Repository) string {
			sub := filepath.Join(dir, "svc")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(sub, manifest.FileName), cellV1)
			return sub
		}},
		{name: "subdirectory without Cell.json", want: false, setup: func(t *testing.T, dir string, _ *git.Repository) string {
			sub := filepath.Join(dir, "svc")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			return sub
		}},
		{name: "committed in subdirectory", want: false, setup: func(t *testing.T, dir string, r *git.Repository) string {
			if err := os.Mkdir(filepath.Join(dir, "svc"), 0o755); err != nil {
				t.Fatal(err)
			}
			commit(t, r, map[string]string{"svc/" + manifest.FileName: cellV1}, "svc\n", "2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z")
			return filepath.Join(dir, "svc")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, r := goldenRepo(t)
			if tt.setup != nil {
				dir = tt.setup(t, dir, r)
			}
			got, err := Dirty(dir)
			if err != nil || got != tt.want {
				t.Fatalf("Dirty() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}

	t.Run("no commits", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := git.PlainInit(dir, false); err != nil {
			t.Fatal(err)
		}
		if got, err := Dirty(dir); err != nil || got {
			t.Fatalf("Dirty() without Cell.json = %v, %v; want false", got, err)
		}
		writeFile(t, filepath.Join(dir, manifest.FileName), cellV1)
		if got, err := Dirty(dir); err != nil || !got {
			t.Fatalf("Dirty() with untracked Cell.json = %v, %v; want true", got, err)
		}
	})
	t.Run("not a repo", func(t *testing.T) {
		dir := t.TempDir()
		if inRepo(dir) {
			t.Skip("the temporary directory is inside a git repository")
		}
		if _, err := Dirty(dir); !errors.Is(err, ErrNotRepo) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Dirty() error = %v, want ErrNotRepo naming %s", err, dir)
		}
	})
}
