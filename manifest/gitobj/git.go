package gitobj

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/ipfs/go-cid"
)

// Errors about git repositories, revisions and CIDs; match them with
// errors.Is.
var (
	// ErrNotRepo means the directory is not inside a git repository.
	ErrNotRepo = errors.New("manifest: not a git repository")
	// ErrSHA256Repo means the repository uses sha256 object names, which
	// a git-raw sha1 CID cannot address.
	ErrSHA256Repo = errors.New("manifest: sha256 object-format repositories are not supported")
	// ErrNoCommits means HEAD has no commit yet.
	ErrNoCommits = errors.New("manifest: no commits")
	// ErrUnknownRef means a revision does not name a commit.
	ErrUnknownRef = errors.New("manifest: unknown revision")
	// ErrAmbiguousRef means an abbreviated hash matches several commits
	// or tags.
	ErrAmbiguousRef = errors.New("manifest: ambiguous revision")
)

// CommitCID returns the CID of the commit that ref names in the git
// repository containing dir (dir or any parent may hold .git). An empty ref
// means HEAD. Like git rev-parse, ref may be a ref name (HEAD, a tag, a
// branch, a remote branch; annotated tags are peeled to their commit), a
// full hash, or an unambiguous hash abbreviated to at least 4 digits,
// followed by any number of ~N and ^N (HEAD~1, v1.0^2); other revision
// syntax is rejected.
//
// Errors wrap ErrNotRepo, ErrSHA256Repo, ErrNoCommits (HEAD is unborn),
// ErrUnknownRef or ErrAmbiguousRef, and name dir and ref.
func CommitCID(dir, ref string) (cid.Cid, error) {
	r, abs, err := openRepo(dir)
	if err != nil {
		return cid.Undef, err
	}
	if ref == "" {
		ref = "HEAD"
	}
	h, err := resolve(r, ref)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w (repository %s)", err, abs)
	}
	return manifest.CIDOf(h), nil
}

// openRepo opens the repository containing dir, and returns it with dir
// made absolute.
func openRepo(dir string) (*git.Repository, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fmt.Errorf("manifest: %w", err)
	}
	// Without this check go-git would search the parents of a missing dir.
	if _, err := os.Stat(abs); err != nil {
		return nil, "", fmt.Errorf("manifest: %w", err)
	}
	r, err := git.PlainOpenWithOptions(abs, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	switch {
	case errors.Is(err, git.ErrRepositoryNotExists):
		return nil, "", fmt.Errorf("%w: %s", ErrNotRepo, abs)
	case errors.Is(err, git.ErrUnknownExtension) && strings.Contains(strings.ToLower(err.Error()), "objectformat"):
		// Git only writes extensions.objectFormat for sha256.
		return nil, "", fmt.Errorf("%w: %s", ErrSHA256Repo, abs)
	case err != nil:
		return nil, "", fmt.Errorf("manifest: open git repository at %s: %w", abs, err)
	}
	cfg, err := r.Config()
	if err != nil {
		return nil, "", fmt.Errorf("manifest: read git config at %s: %w", abs, err)
	}
	if cfg.Raw.HasSection("extensions") {
		if f := cfg.Raw.Section("extensions").Option("objectformat"); f != "" && !strings.EqualFold(f, "sha1") {
			return nil, "", fmt.Errorf("%w: %s", ErrSHA256Repo, abs)
		}
	}
	return r, abs, nil
}

// resolve returns the commit that rev names: a ref name or a full or
// abbreviated hash, followed by any number of ~N (N-th first-parent
// ancestor) and ^N (N-th parent), as in git rev-parse. go-git's
// ResolveRevision is not used: it prefers any hash prefix, however short or
// ambiguous, to a ref, and silently ignores ":path", "@{n}" and "^{type}".
func resolve(r *git.Repository, rev string) (plumbing.Hash, error) {
	base, ops := rev, ""
	if i := strings.IndexAny(rev, "~^"); i >= 0 {
		base, ops = rev[:i], rev[i:] // ref names cannot contain '~' or '^'
	}
	if base == "@" {
		base = "HEAD"
	}
	h, err := resolveBase(r, rev, base)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for ops != "" {
		op, n, j := ops[0], 1, 1
		for j < len(ops) && '0' <= ops[j] && ops[j] <= '9' {
			j++
		}
		if j > 1 {
			if n, err = strconv.Atoi(ops[1:j]); err != nil {
				return plumbing.ZeroHash, fmt.Errorf("%w %q: %v", ErrUnknownRef, rev, err)
			}
		}
		if op != '~' && op != '^' {
			return plumbing.ZeroHash, fmt.Errorf("%w %q: unsupported syntax (want a ref or hash, optionally followed by ~N or ^N)", ErrUnknownRef, rev)
		}
		ops = ops[j:]
		if op == '^' && n == 0 {
			continue // the commit itself
		}
		steps, parent := n, 1 // ~N: first parent, N times
		if op == '^' {
			steps, parent = 1, n // ^N: N-th parent, once
		}
		for range steps {
			c, err := r.CommitObject(h)
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("%w %q: %v", ErrUnknownRef, rev, err)
			}
			if len(c.ParentHashes) < parent {
				return plumbing.ZeroHash, fmt.Errorf("%w %q: commit %s has no parent %d", ErrUnknownRef, rev, h, parent)
			}
			h = c.ParentHashes[parent-1]
		}
	}
	return h, nil
}

// resolveBase returns the commit that base names: first as a ref name
// (HEAD, a tag, a branch, a remote branch), then as a full or abbreviated
// hash. rev is for errors.
func resolveBase(r *git.Repository, rev, base string) (plumbing.Hash, error) {
	for _, rule := range plumbing.RefRevParseRules {
		if ref, err := r.Reference(plumbing.ReferenceName(fmt.Sprintf(rule, base)), true); err == nil {
			return peel(r, rev, ref.Hash())
		}
	}
	if isHex(base) {
		hashes, err := commitish(r, base)
		switch {
		case err != nil:
			return plumbing.ZeroHash, fmt.Errorf("%w %q: %v", ErrUnknownRef, rev, err)
		case len(hashes) == 1:
			return peel(r, rev, hashes[0])
		case len(hashes) > 1:
			return plumbing.ZeroHash, fmt.Errorf("%w %q: matches %d commits or tags", ErrAmbiguousRef, rev, len(hashes))
		}
	}
	if base == "HEAD" {
		return plumbing.ZeroHash, fmt.Errorf("%w: HEAD is unborn", ErrNoCommits)
	}
	return plumbing.ZeroHash, fmt.Errorf("%w %q", ErrUnknownRef, rev)
}

// commitish returns the commits and tags whose hash is the hex string s,
// in full or abbreviated to at least 4 digits.
func commitish(r *git.Repository, s string) ([]plumbing.Hash, error) {
	s = strings.ToLower(s)
	var candidates []plumbing.Hash
	switch n := len(s); {
	case n == 2*len(plumbing.ZeroHash):
		candidates = []plumbing.Hash{plumbing.NewHash(s)}
	case n < 4 || n > 2*len(plumbing.ZeroHash):
		return nil, nil
	default:
		st, ok := r.Storer.(interface {
			HashesWithPrefix(prefix []byte) ([]plumbing.Hash, error)
		})
		if !ok {
			return nil, errors.New("abbreviated hashes are not supported by this storage")
		}
		prefix, err := hex.DecodeString(s[:n&^1])
		if err != nil {
			return nil, err
		}
		all, err := st.HashesWithPrefix(prefix)
		if err != nil {
			return nil, err
		}
		for _, h := range all {
			if strings.HasPrefix(h.String(), s) {
				candidates = append(candidates, h)
			}
		}
	}
	var out []plumbing.Hash
	for _, h := range candidates {
		o, err := r.Storer.EncodedObject(plumbing.AnyObject, h)
		if err == nil && (o.Type() == plumbing.CommitObject || o.Type() == plumbing.TagObject) {
			out = append(out, h)
		}
	}
	return out, nil
}

// peel follows annotated tags from h to a commit; rev is for errors.
func peel(r *git.Repository, rev string, h plumbing.Hash) (plumbing.Hash, error) {
	for range 16 {
		o, err := r.Object(plumbing.AnyObject, h)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("%w %q: object %s: %v", ErrUnknownRef, rev, h, err)
		}
		switch o := o.(type) {
		case *object.Commit:
			return o.Hash, nil
		case *object.Tag:
			h = o.Target
		default:
			return plumbing.ZeroHash, fmt.Errorf("%w %q: names a %s, not a commit", ErrUnknownRef, rev, o.Type())
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("%w %q: too many nested tags", ErrUnknownRef, rev)
}

// Dirty reports whether the content of dir/Cell.json differs between the
// commit at HEAD, the index and the worktree: modified, deleted, staged, or
// present but not committed (untracked or ignored). It is false when
// Cell.json is committed and unchanged, and when it exists nowhere. dir may
// be anywhere inside the worktree. File modes and git's content filters
// (such as core.autocrlf) are not considered.
func Dirty(dir string) (bool, error) {
	r, abs, err := openRepo(dir)
	if err != nil {
		return false, err
	}
	wt, err := r.Worktree()
	if err != nil {
		return false, fmt.Errorf("manifest: %s: %w", abs, err)
	}
	path := filepath.Join(abs, manifest.FileName)
	name, err := repoPath(wt.Filesystem.Root(), path)
	if err != nil {
		return false, err
	}

	var head, staged plumbing.Hash // zero: absent
	if ref, err := r.Head(); err == nil {
		c, err := r.CommitObject(ref.Hash())
		if err != nil {
			return false, fmt.Errorf("manifest: HEAD of %s: %w", abs, err)
		}
		f, err := c.File(name)
		switch {
		case err == nil:
			head = f.Hash
		case !errors.Is(err, object.ErrFileNotFound):
			return false, fmt.Errorf("manifest: %s at HEAD: %w", path, err)
		}
	} else if !errors.Is(err, plumbing.ErrReferenceNotFound) {
		return false, fmt.Errorf("manifest: HEAD of %s: %w", abs, err)
	}
	idx, err := r.Storer.Index()
	if err != nil {
		return false, fmt.Errorf("manifest: git index of %s: %w", abs, err)
	}
	if e, err := idx.Entry(name); err == nil {
		staged = e.Hash
	}
	work, err := blobHash(path)
	if err != nil {
		return false, err
	}
	return head != staged || staged != work, nil
}

// repoPath returns path relative to the worktree root, slash-separated.
func repoPath(root, path string) (string, error) {
	root, err1 := filepath.EvalSymlinks(root)
	dir, err2 := filepath.EvalSymlinks(filepath.Dir(path))
	rel, err3 := filepath.Rel(root, filepath.Join(dir, filepath.Base(path)))
	if err := errors.Join(err1, err2, err3); err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("manifest: %s is not inside the worktree %s: %v", path, root, err)
	}
	return filepath.ToSlash(rel), nil
}

// blobHash returns the git blob hash of the file (or symlink) at path, or
// the zero hash if there is none.
func blobHash(path string) (plumbing.Hash, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return plumbing.ZeroHash, nil
	case err != nil:
		return plumbing.ZeroHash, fmt.Errorf("manifest: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("manifest: %w", err)
		}
		return plumbing.ComputeHash(plumbing.BlobObject, []byte(target)), nil
	case !fi.Mode().IsRegular():
		return plumbing.ZeroHash, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	h := plumbing.NewHasher(plumbing.BlobObject, fi.Size())
	if n, err := io.Copy(h, f); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("manifest: %w", err)
	} else if n != fi.Size() {
		return plumbing.ZeroHash, fmt.Errorf("manifest: %s changed while being read", path)
	}
	return h.Sum(), nil
}

// AtCommit reads Cell.json from the root of the tree of commit c in the
// repository containing dir. The error wraps ErrNoManifest when the tree
// has none, and ErrInvalid when it does not parse.
func AtCommit(dir string, c cid.Cid) (*manifest.Manifest, error) {
	h, err := manifest.HashOf(c)
	if err != nil {
		return nil, err
	}
	r, _, err := openRepo(dir)
	if err != nil {
		return nil, err
	}
	commit, err := r.CommitObject(h)
	if err != nil {
		return nil, fmt.Errorf("manifest: commit %s: %w", h, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("manifest: tree of %s: %w", h, err)
	}
	f, err := tree.File(manifest.FileName)
	if err != nil {
		return nil, fmt.Errorf("%w: commit %s", ErrNoManifest, h)
	}
	s, err := f.Contents()
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s at %s: %w", manifest.FileName, h, err)
	}
	return manifest.Parse([]byte(s))
}

// isHex reports whether s is all hex digits, in either case.
func isHex(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}
