package gitobj

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
)

// ErrNoProvider is returned (wrapped, with what each provider did wrong)
// when no provider served a complete, valid copy.
var ErrNoProvider = errors.New("manifest: no provider served the objects")

// ErrTargetNotEmpty is returned by Clone for a target that exists and is
// not an empty directory.
var ErrTargetNotEmpty = errors.New("manifest: clone target exists and is not empty")

// Router finds providers of a CID and the addresses of a peer; kad-dht's
// IpfsDHT is one.
type Router interface {
	routing.ContentRouting
	routing.PeerRouting
}

// Fetcher fetches commits and their manifests from the nodes that serve
// them, checking every object's hash, and keeps what it fetched in a cache
// (objects are immutable, so the cache never expires). It is safe for
// concurrent use.
type Fetcher struct {
	host   host.Host
	router Router
	cache  storer.EncodedObjectStorer
	log    *slog.Logger

	fetched atomic.Uint64 // objects fetched from peers
}

// Fetched returns how many objects the fetcher has fetched from peers, each
// hash-checked.
func (f *Fetcher) Fetched() uint64 { return f.fetched.Load() }

// NewFetcher returns a Fetcher on h. router may be nil (only the hinted
// providers are tried); cacheDir "" keeps the cache in memory, otherwise it
// is a bare git repository created on first use. log may be nil.
func NewFetcher(h host.Host, router Router, cacheDir string, log *slog.Logger) (*Fetcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fetcher{host: h, router: router, log: log}
	if cacheDir == "" {
		f.cache = memory.NewStorage()
		return f, nil
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("manifest: object cache: %w", err)
	}
	f.cache = filesystem.NewStorage(osfs.New(cacheDir), cache.NewObjectLRUDefault())
	return f, nil
}

// Manifest returns the Cell.json of the commit c, and the commit itself.
// Objects already in the cache are not fetched again; the others come from
// hints first, then from the providers the router finds, and a provider
// that serves a wrong or incomplete object is skipped for the next one.
func (f *Fetcher) Manifest(ctx context.Context, c cid.Cid, hints []peer.ID) (*manifest.Manifest, *object.Commit, error) {
	h, err := manifest.HashOf(c)
	if err != nil {
		return nil, nil, err
	}
	var m *manifest.Manifest
	var commit *object.Commit
	err = f.withProviders(ctx, c, hints, func(p peer.ID) error {
		co, err := f.object(ctx, p, h)
		if err != nil {
			return err
		}
		if co.Type() != plumbing.CommitObject {
			return fmt.Errorf("%w: %s is a %s, not a commit", manifest.ErrNotCommitCID, h, co.Type())
		}
		commit = new(object.Commit)
		if err := commit.Decode(co); err != nil {
			return fmt.Errorf("manifest: decode commit %s: %w", h, err)
		}
		to, err := f.object(ctx, p, commit.TreeHash)
		if err != nil {
			return err
		}
		var tree object.Tree
		if err := tree.Decode(to); err != nil {
			return fmt.Errorf("manifest: decode tree %s: %w", commit.TreeHash, err)
		}
		var blob plumbing.Hash
		for _, e := range tree.Entries {
			if e.Name == manifest.FileName && e.Mode.IsFile() {
				blob = e.Hash
			}
		}
		if blob.IsZero() {
			return permanent{fmt.Errorf("%w: commit %s (%s)", ErrNoManifest, h, c)}
		}
		bo, err := f.object(ctx, p, blob)
		if err != nil {
			return err
		}
		_, data, err := readObject(f.cache, bo.Hash())
		if err != nil {
			return err
		}
		if m, err = manifest.Parse(data); err != nil {
			return permanent{fmt.Errorf("%w (commit %s)", err, c)}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return m, commit, nil
}

// object returns object h from the cache, or fetches it from p into it.
func (f *Fetcher) object(ctx context.Context, p peer.ID, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if o, err := f.cache.EncodedObject(plumbing.AnyObject, h); err == nil {
		return o, nil
	}
	if p == "" {
		return nil, fmt.Errorf("%w: %s", ErrMissingObject, h)
	}
	got, err := fetchBatch(ctx, f.host, p, []plumbing.Hash{h}, f.cache)
	f.fetched.Add(uint64(len(got)))
	if err != nil {
		return nil, err
	}
	return got[h], nil
}

// fetchAll makes the cache hold every object reachable from commit h,
// fetching what it lacks from p in batches.
func (f *Fetcher) fetchAll(ctx context.Context, p peer.ID, h plumbing.Hash) (int, error) {
	seen := map[plumbing.Hash]bool{h: true}
	queue := []plumbing.Hash{h}
	count := 0
	for len(queue) > 0 {
		var want []plumbing.Hash
		var next []plumbing.Hash
		for _, q := range queue {
			if o, err := f.cache.EncodedObject(plumbing.AnyObject, q); err == nil {
				kids, err := children(o)
				if err != nil {
					return count, fmt.Errorf("manifest: decode %s: %w", q, err)
				}
				next = append(next, kids...)
				count++
			} else {
				want = append(want, q)
			}
		}
		for len(want) > 0 {
			batch := want[:min(len(want), MaxBatch)]
			want = want[len(batch):]
			if p == "" {
				return count, fmt.Errorf("%w: %s", ErrMissingObject, batch[0])
			}
			got, err := fetchBatch(ctx, f.host, p, batch, f.cache)
			f.fetched.Add(uint64(len(got)))
			if errors.Is(err, ErrMissingObject) && len(got) > 0 {
				// The provider spent its byte budget for one request (or
				// lacks some): ask again for the rest, which stops once a
				// request brings nothing new.
				for _, h := range batch {
					if got[h] == nil {
						want = append(want, h)
					}
				}
				err = nil
			}
			if err != nil {
				return count, err
			}
			for _, o := range got {
				kids, err := children(o)
				if err != nil {
					return count, fmt.Errorf("manifest: decode %s: %w", o.Hash(), err)
				}
				next = append(next, kids...)
				count++
			}
		}
		queue = queue[:0]
		for _, k := range next {
			if !seen[k] {
				seen[k] = true
				queue = append(queue, k)
			}
		}
	}
	return count, nil
}

// Clone fetches every object reachable from commit c and writes a git
// repository at dir with the commit checked out on branch "main". dir must
// not exist or be an empty directory; on failure nothing is left at dir
// that was not there before.
func (f *Fetcher) Clone(ctx context.Context, c cid.Cid, hints []peer.ID, dir string) error {
	h, err := manifest.HashOf(c)
	if err != nil {
		return err
	}
	if err := checkTarget(dir); err != nil {
		return err
	}
	var n int
	err = f.withProviders(ctx, c, hints, func(p peer.ID) error {
		var err error
		n, err = f.fetchAll(ctx, p, h)
		return err
	})
	if err != nil {
		return err
	}
	if err := placeRepo(f.cache, h, "", dir); err != nil {
		return err
	}
	f.log.Info("cloned", "cid", c, "objects", n, "dir", dir)
	return nil
}

// permanent marks an error that another provider cannot fix (the data is
// verified, so every honest provider serves the same).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// withProviders runs try with the cache alone (peer ""), then with each
// hinted peer, then with each provider the router finds, until one
// succeeds. A provider that fails is logged and skipped.
func (f *Fetcher) withProviders(ctx context.Context, c cid.Cid, hints []peer.ID, try func(peer.ID) error) error {
	var errs []error
	tried := map[peer.ID]bool{f.host.ID(): true}
	attempt := func(p peer.ID) (done bool, err error) {
		if p != "" {
			if tried[p] {
				return false, nil
			}
			tried[p] = true
			if err := f.connect(ctx, p); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				return false, nil
			}
		}
		err = try(p)
		var perm permanent
		switch {
		case err == nil:
			return true, nil
		case errors.As(err, &perm):
			return true, perm.error
		case p != "":
			f.log.Warn("provider failed; trying another", "peer", p, "cid", c, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
		return false, nil
	}
	if done, err := attempt(""); done {
		return err
	}
	for _, p := range hints {
		if done, err := attempt(p); done {
			return err
		}
	}
	if f.router != nil {
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for ai := range f.router.FindProvidersAsync(pctx, c, 20) {
			if len(ai.Addrs) > 0 {
				f.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Minute)
			}
			if done, err := attempt(ai.ID); done {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w for %s: no provider found (none hinted, none in the DHT)", ErrNoProvider, c)
	}
	return fmt.Errorf("%w for %s: %w", ErrNoProvider, c, errors.Join(errs...))
}

// connect makes sure the host can reach p, asking the router for its
// addresses when the peerstore has none.
func (f *Fetcher) connect(ctx context.Context, p peer.ID) error {
	ai := peer.AddrInfo{ID: p, Addrs: f.host.Peerstore().Addrs(p)}
	if len(ai.Addrs) == 0 && f.router != nil {
		found, err := f.router.FindPeer(ctx, p)
		if err != nil {
			return fmt.Errorf("find addresses: %w", err)
		}
		ai = found
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return f.host.Connect(cctx, ai)
}
