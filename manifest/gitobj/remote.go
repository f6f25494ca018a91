package gitobj

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/revlist"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// ErrUnreachable means a git remote could not be listed or fetched: a
// missing local path, a refused connection, a DNS failure, missing or
// rejected credentials, a transfer cut short. Callers fall back to peers.
var ErrUnreachable = errors.New("manifest: git remote unreachable")

// mirrorRefSpecs make a cache repository mirror its remote's branches and
// tags, even when they move or go away.
func mirrorRefSpecs() []config.RefSpec {
	return []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}
}

// Remotes is a cache of git remotes: one bare repository per URL, which
// mirrors the remote's branches, tags and HEAD as of the last Resolve. It
// is safe for concurrent use; two Remotes, or two processes, must not
// share a directory.
type Remotes struct {
	dir string

	mu    sync.Mutex
	locks map[string]*sync.RWMutex // by cache path
}

// NewRemotes returns a cache under dir, which is created, mode 0700, by
// the first Resolve. The repository for a URL is
// dir/<the first 16 hex digits of sha256(URL)>.git, where a local path is
// first made absolute.
func NewRemotes(dir string) *Remotes {
	return &Remotes{dir: dir, locks: make(map[string]*sync.RWMutex)}
}

// Resolve fetches every branch and tag of the git remote url into its
// cache repository (cloning it the first time), then returns the commit
// that tag names there: refs/tags/<tag> (an annotated tag peeled to its
// commit), else refs/heads/<tag>, or, for tag "", the remote's HEAD.
//
// url is anything git understands: https://, ssh:// or user@host:path,
// file://, or a local path (relative to the working directory).
// Errors wrap ErrUnreachable when the remote cannot be listed or fetched
// (then the hash returned is what the cache resolves tag to as of the last
// fetch, or zero: callers decide whether to use it), ErrUnknownRef when
// the remote has no such tag or branch (the error names the tag and lists
// up to 10 of the remote's tags), ErrNoCommits for an empty remote, and
// ctx.Err() when ctx ends first.
func (r *Remotes) Resolve(ctx context.Context, url, tag string) (plumbing.Hash, error) {
	u, path, err := r.locate(url)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if tag != "" {
		if err := manifest.CheckTag(tag); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("%w: %w", ErrUnknownRef, err)
		}
	}
	lk := r.lock(path)
	lk.Lock()
	defer lk.Unlock()
	repo, err := r.fetch(ctx, u, path)
	if errors.Is(err, ErrUnreachable) {
		var h plumbing.Hash
		if cached, oerr := git.PlainOpen(path); oerr == nil {
			h, _ = resolveRemoteRef(cached, url, tag)
		}
		return h, err
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return resolveRemoteRef(repo, url, tag)
}

// Manifest returns the Cell.json at the root of the tree of commit in the
// cache repository of url. The error wraps fs.ErrNotExist when url was
// never fetched, plumbing.ErrObjectNotFound when the cache lacks the
// commit, ErrNoManifest when the tree has no Cell.json and ErrInvalid when
// it does not parse.
func (r *Remotes) Manifest(url string, commit plumbing.Hash) (*manifest.Manifest, error) {
	repo, unlock, err := r.open(url)
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := repo.CommitObject(commit)
	if err != nil {
		return nil, fmt.Errorf("manifest: commit %s from %s: %w", commit, url, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("manifest: tree of %s from %s: %w", commit, url, err)
	}
	e, err := tree.FindEntry(manifest.FileName)
	if err != nil || !e.Mode.IsFile() {
		return nil, fmt.Errorf("%w: commit %s from %s", ErrNoManifest, commit, url)
	}
	blob, err := repo.BlobObject(e.Hash)
	if err != nil {
		return nil, fmt.Errorf("manifest: %s at %s from %s: %w", manifest.FileName, commit, url, err)
	}
	if blob.Size > manifest.MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes (commit %s from %s)", manifest.ErrInvalid, manifest.MaxSize, commit, url)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s at %s from %s: %w", manifest.FileName, commit, url, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s at %s from %s: %w", manifest.FileName, commit, url, err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w (commit %s from %s)", err, commit, url)
	}
	return m, nil
}

// Checkout writes a git repository at dir holding commit, from the cache
// repository of url, and every object it reaches, checked out on branch
// "main", with url as its remote "origin". dir must not exist or be an
// empty directory (else the error wraps ErrTargetNotEmpty); on failure
// nothing is left at dir that was not there before. Errors are as for
// Manifest when the cache lacks url or the commit.
func (r *Remotes) Checkout(url string, commit plumbing.Hash, dir string) error {
	if err := checkTarget(dir); err != nil {
		return err
	}
	u, _, err := r.locate(url)
	if err != nil {
		return err
	}
	repo, unlock, err := r.open(url)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := repo.CommitObject(commit); err != nil {
		return fmt.Errorf("manifest: commit %s from %s: %w", commit, url, err)
	}
	return placeRepo(repo.Storer, commit, u, dir)
}

// Repo returns the cache repository of url, to read or serve its objects
// (which a later Resolve only adds to). The error wraps fs.ErrNotExist
// when url was never fetched.
func (r *Remotes) Repo(url string) (*git.Repository, error) {
	repo, unlock, err := r.open(url)
	if err != nil {
		return nil, err
	}
	unlock()
	return repo, nil
}

// locate returns url normalized (a local path made absolute) and the path
// of its cache repository.
func (r *Remotes) locate(url string) (string, string, error) {
	if url == "" {
		return "", "", errors.New("manifest: empty git URL")
	}
	if err := manifest.CheckGitURL(url); err != nil {
		return "", "", fmt.Errorf("manifest: git URL %q: %w", url, err)
	}
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return "", "", fmt.Errorf("manifest: git URL %q: %w", url, err)
	}
	u := url
	if ep.Protocol == "file" && !strings.HasPrefix(url, "file://") {
		if u, err = filepath.Abs(url); err != nil {
			return "", "", fmt.Errorf("manifest: git URL %q: %w", url, err)
		}
	}
	sum := sha256.Sum256([]byte(u))
	return u, filepath.Join(r.dir, hex.EncodeToString(sum[:])[:16]+".git"), nil
}

// lock returns the lock of the cache repository at path.
func (r *Remotes) lock(path string) *sync.RWMutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	lk, ok := r.locks[path]
	if !ok {
		lk = new(sync.RWMutex)
		r.locks[path] = lk
	}
	return lk
}

// open opens the cache repository of url and read-locks it; the caller
// calls unlock when done.
func (r *Remotes) open(url string) (repo *git.Repository, unlock func(), err error) {
	_, path, err := r.locate(url)
	if err != nil {
		return nil, nil, err
	}
	lk := r.lock(path)
	lk.RLock()
	repo, err = git.PlainOpen(path)
	switch {
	case errors.Is(err, git.ErrRepositoryNotExists):
		lk.RUnlock()
		return nil, nil, fmt.Errorf("manifest: %s has not been fetched (Resolve fetches it): %w", url, fs.ErrNotExist)
	case err != nil:
		lk.RUnlock()
		return nil, nil, fmt.Errorf("manifest: open cache of %s: %w", url, err)
	}
	return repo, lk.RUnlock, nil
}

// fetch brings the cache repository at path up to date with remote u,
// creating it the first time (and leaving nothing if that fails). The
// caller holds the repository's lock.
func (r *Remotes) fetch(ctx context.Context, u, path string) (*git.Repository, error) {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, fmt.Errorf("manifest: git cache: %w", err)
	}
	repo, err := git.PlainOpen(path)
	fresh := errors.Is(err, git.ErrRepositoryNotExists)
	var tmp string
	switch {
	case fresh:
		if tmp, err = os.MkdirTemp(r.dir, filepath.Base(path)+".tmp-*"); err != nil {
			return nil, fmt.Errorf("manifest: git cache: %w", err)
		}
		defer os.RemoveAll(tmp) // a no-op once renamed
		if repo, err = git.PlainInit(tmp, true); err != nil {
			return nil, fmt.Errorf("manifest: git cache: init: %w", err)
		}
		if _, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{u}, Fetch: mirrorRefSpecs()}); err != nil {
			return nil, fmt.Errorf("manifest: git cache: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("manifest: open git cache of %s: %w", u, err)
	}
	remote, err := repo.Remote("origin")
	if err != nil {
		return nil, fmt.Errorf("manifest: git cache of %s: %w", u, err)
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{})
	if err != nil {
		return nil, remoteError(ctx, u, err)
	}
	err = remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: mirrorRefSpecs(), Tags: git.NoTags, Force: true, Prune: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, remoteError(ctx, u, err)
	}
	if err := setHead(repo, refs); err != nil {
		return nil, fmt.Errorf("manifest: git cache of %s: %w", u, err)
	}
	if fresh {
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("manifest: git cache: %w", err)
		}
		if repo, err = git.PlainOpen(path); err != nil {
			return nil, fmt.Errorf("manifest: git cache: %w", err)
		}
	}
	return repo, nil
}

// remoteError classifies an error from listing or fetching remote u.
func remoteError(ctx context.Context, u string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("manifest: fetch %s: %w", u, ctx.Err())
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return fmt.Errorf("%w: remote %s is empty", ErrNoCommits, u)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, u, err)
}

// setHead points the cache's HEAD where the remote's HEAD, in refs from
// listing it, points: a branch, or a commit if it is detached. A remote
// that does not say leaves HEAD as it was.
func setHead(repo *git.Repository, refs []*plumbing.Reference) error {
	for _, ref := range refs {
		if ref.Name() != plumbing.HEAD {
			continue
		}
		switch ref.Type() {
		case plumbing.SymbolicReference:
			return repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, ref.Target()))
		case plumbing.HashReference:
			return repo.Storer.SetReference(plumbing.NewHashReference(plumbing.HEAD, ref.Hash()))
		}
	}
	return nil
}

// resolveRemoteRef returns the commit that tag names in a cache
// repository: see Resolve. url is for errors.
func resolveRemoteRef(repo *git.Repository, url, tag string) (plumbing.Hash, error) {
	if tag == "" {
		ref, err := repo.Reference(plumbing.HEAD, true)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("%w: HEAD of %s: %v", ErrNoCommits, url, err)
		}
		return peel(repo, "HEAD", ref.Hash())
	}
	for _, name := range []plumbing.ReferenceName{plumbing.NewTagReferenceName(tag), plumbing.NewBranchReferenceName(tag)} {
		if ref, err := repo.Reference(name, true); err == nil {
			h, err := peel(repo, tag, ref.Hash())
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("%w (at %s)", err, url)
			}
			return h, nil
		}
	}
	var tags []string
	if iter, err := repo.Tags(); err == nil {
		iter.ForEach(func(ref *plumbing.Reference) error {
			tags = append(tags, ref.Name().Short())
			return nil
		})
	}
	sort.Strings(tags)
	have := "it has no tags"
	switch n := len(tags); {
	case n > 10:
		have = fmt.Sprintf("its tags include %s and %d more", strings.Join(tags[:10], ", "), n-10)
	case n > 0:
		have = "its tags are " + strings.Join(tags, ", ")
	}
	return plumbing.ZeroHash, fmt.Errorf("%w %q: no such tag or branch at %s (%s)", ErrUnknownRef, tag, url, have)
}

// checkTarget checks that dir does not exist or is an empty directory.
func checkTarget(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case err == nil && len(ents) > 0:
		return fmt.Errorf("%w: %s", ErrTargetNotEmpty, dir)
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	}
	if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
		return fmt.Errorf("%w: %s is a file", ErrTargetNotEmpty, dir)
	}
	return fmt.Errorf("manifest: checkout target: %w", err)
}

// placeRepo writes the repository of checkoutRepo in a temporary sibling
// of dir and renames it into place, so a failure leaves nothing at dir. An
// empty directory at dir is replaced.
func placeRepo(st storer.EncodedObjectStorer, h plumbing.Hash, url, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".checkout-*")
	if err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := checkoutRepo(st, h, url, tmp); err != nil {
		return err
	}
	// os.Rename refuses to replace a directory, even an empty one.
	if err := os.Remove(abs); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return fmt.Errorf("manifest: checkout: move into place: %w", err)
	}
	return nil
}

// checkoutRepo initialises a repository at dir, copies every object
// reachable from commit h into it from st as one packfile (thousands of
// loose objects cost more in opened files than anything else), and checks
// h out on branch main, with url, if not empty, as remote origin.
func checkoutRepo(st storer.EncodedObjectStorer, h plumbing.Hash, url, dir string) error {
	r, err := git.PlainInit(dir, false)
	if err != nil {
		return fmt.Errorf("manifest: checkout: init: %w", err)
	}
	hashes, err := revlist.Objects(st, []plumbing.Hash{h}, nil)
	if err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	pw, ok := r.Storer.(storer.PackfileWriter)
	if !ok {
		return errors.New("manifest: checkout: repository storage cannot take a packfile")
	}
	w, err := pw.PackfileWriter()
	if err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	if _, err := packfile.NewEncoder(w, st, false).Encode(hashes, 0); err != nil {
		w.Close()
		return fmt.Errorf("manifest: checkout: write pack: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("manifest: checkout: write pack: %w", err)
	}
	branch := plumbing.NewBranchReferenceName("main")
	if err := r.Storer.SetReference(plumbing.NewHashReference(branch, h)); err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	if err := r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, branch)); err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	if url != "" {
		if _, err := r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}}); err != nil {
			return fmt.Errorf("manifest: checkout: %w", err)
		}
	}
	wt, err := r.Worktree()
	if err != nil {
		return fmt.Errorf("manifest: checkout: %w", err)
	}
	if err := wt.Reset(&git.ResetOptions{Commit: h, Mode: git.HardReset}); err != nil {
		return fmt.Errorf("manifest: checkout: check out: %w", err)
	}
	return nil
}
