package gitobj

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

func newHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// link tells from's peerstore how to reach to.
func link(from, to host.Host) {
	from.Peerstore().AddAddrs(to.ID(), to.Addrs(), time.Hour)
}

// tamperer serves every requested object with one byte changed, or cuts
// the stream short when truncate is set.
func tamperer(t *testing.T, truncate bool) host.Host {
	h := newHost(t)
	good := goldenServer(t)
	h.SetStreamHandler(ObjectProtocol, func(s network.Stream) {
		defer s.Close()
		r := msgio.NewVarintReaderSize(s, maxObjectRequest)
		msg, err := r.ReadMsg()
		if err != nil {
			return
		}
		var req objectRequest
		if objDec.Unmarshal(msg, &req) != nil {
			return
		}
		w := msgio.NewVarintWriter(s)
		for _, hb := range req.Hashes {
			typ, data, err := good.read(plumbing.Hash(hb))
			if err != nil {
				return
			}
			if truncate {
				data = data[:len(data)/2]
			} else {
				data = append([]byte{}, data...)
				data[0] ^= 1
			}
			b, _ := objEnc.Marshal(objectFrame{Hash: hb, Type: int8(typ), Data: data})
			_ = w.WriteMsg(b)
		}
	})
	return h
}

// goldenServer is a Server (on a throwaway host) serving HEAD of the
// golden repository.
func goldenServer(t *testing.T) *Server {
	dir, r := goldenRepo(t)
	head, _ := r.Head()
	s := NewServer(newHost(t), nil)
	if err := s.ServeDir(dir, head.Hash()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFetchManifest(t *testing.T) {
	dir, r := goldenRepo(t)
	head, _ := r.Head()
	c := manifest.CIDOf(head.Hash())
	good := newHost(t)
	srv := NewServer(good, nil)
	if err := srv.ServeDir(dir, head.Hash()); err != nil {
		t.Fatal(err)
	}
	// Two commits share main.go: 2 commits, 2 trees, 3 blobs.
	if srv.Len() != 7 {
		t.Fatalf("serving %d objects, want 7", srv.Len())
	}
	bad, short := tamperer(t, false), tamperer(t, true)
	client := newHost(t)
	for _, h := range []host.Host{good, bad, short} {
		link(client, h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("tampering provider skipped", func(t *testing.T) {
		f, _ := NewFetcher(client, nil, "", nil)
		m, commit, err := f.Manifest(ctx, c, []peer.ID{bad.ID(), short.ID(), good.ID()})
		if err != nil {
			t.Fatal(err)
		}
		if m.Name != "acme/hello" || m.Version != "0.2.0" || commit.Hash != head.Hash() {
			t.Fatalf("got %+v", m)
		}
	})
	t.Run("only liars", func(t *testing.T) {
		f, _ := NewFetcher(client, nil, "", nil)
		_, _, err := f.Manifest(ctx, c, []peer.ID{bad.ID(), short.ID()})
		if !errors.Is(err, ErrNoProvider) || !errors.Is(err, ErrTampered) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown commit", func(t *testing.T) {
		f, _ := NewFetcher(client, nil, "", nil)
		_, _, err := f.Manifest(ctx, manifest.CIDOf(plumbing.NewHash("0123456789012345678901234567890123456789")), []peer.ID{good.ID()})
		if !errors.Is(err, ErrMissingObject) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("not a commit CID", func(t *testing.T) {
		f, _ := NewFetcher(client, nil, "", nil)
		// The same digest under the raw codec is not a git commit CID.
		wrong := cid.NewCidV1(cid.Raw, manifest.CIDOf(head.Hash()).Hash())
		if _, _, err := f.Manifest(ctx, wrong, []peer.ID{good.ID()}); !errors.Is(err, manifest.ErrNotCommitCID) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("disk cache", func(t *testing.T) {
		cacheDir := filepath.Join(t.TempDir(), "objects.git")
		f, _ := NewFetcher(client, nil, cacheDir, nil)
		if _, _, err := f.Manifest(ctx, c, []peer.ID{good.ID()}); err != nil {
			t.Fatal(err)
		}
		f2, _ := NewFetcher(client, nil, cacheDir, nil)
		m, _, err := f2.Manifest(ctx, c, nil) // no provider at all: the cache answers
		if err != nil || m.Version != "0.2.0" {
			t.Fatalf("from cache: %+v, %v", m, err)
		}
	})
	t.Run("unreachable provider", func(t *testing.T) {
		f, _ := NewFetcher(client, nil, "", nil)
		gone := newHost(t)
		link(client, gone)
		gone.Close()
		_, _, err := f.Manifest(ctx, c, []peer.ID{gone.ID()})
		if !errors.Is(err, ErrNoProvider) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestFetchNoManifest(t *testing.T) {
	dir := t.TempDir()
	r, _ := git.PlainInit(dir, false)
	h := commit(t, r, map[string]string{"main.go": mainGo}, "no manifest\n", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z")
	srv, client := newHost(t), newHost(t)
	s := NewServer(srv, nil)
	if err := s.ServeDir(dir, h); err != nil {
		t.Fatal(err)
	}
	link(client, srv)
	f, _ := NewFetcher(client, nil, "", nil)
	_, _, err := f.Manifest(context.Background(), manifest.CIDOf(h), []peer.ID{srv.ID()})
	if !errors.Is(err, ErrNoManifest) {
		t.Fatalf("err = %v", err)
	}
}

func TestServerServesOnlyReachable(t *testing.T) {
	dir, r := goldenRepo(t)
	head, _ := r.Head()
	// A blob in the repository that no commit reaches.
	o := r.Storer.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	w, _ := o.Writer()
	w.Write([]byte("secret draft\n"))
	w.Close()
	secret, _ := r.Storer.SetEncodedObject(o)
	srv, client := newHost(t), newHost(t)
	s := NewServer(srv, nil)
	if err := s.ServeDir(dir, head.Hash()); err != nil {
		t.Fatal(err)
	}
	link(client, srv)
	f, _ := NewFetcher(client, nil, "", nil)
	_, err := fetchBatch(context.Background(), client, srv.ID(), []plumbing.Hash{secret}, f.cache)
	if !errors.Is(err, ErrMissingObject) {
		t.Fatalf("unreachable object: err = %v", err)
	}
}

func TestClone(t *testing.T) {
	dir, r := goldenRepo(t)
	head, _ := r.Head()
	c := manifest.CIDOf(head.Hash())
	srv, bad, client := newHost(t), tamperer(t, false), newHost(t)
	s := NewServer(srv, nil)
	if err := s.ServeDir(dir, head.Hash()); err != nil {
		t.Fatal(err)
	}
	link(client, srv)
	link(client, bad)
	f, _ := NewFetcher(client, nil, "", nil)
	ctx := context.Background()

	target := filepath.Join(t.TempDir(), "hello")
	if err := f.Clone(ctx, c, []peer.ID{bad.ID(), srv.ID()}, target); err != nil {
		t.Fatal(err)
	}
	cr, err := git.PlainOpen(target)
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := cr.Head()
	if ch.Hash() != head.Hash() || ch.Name().Short() != "main" {
		t.Fatalf("clone HEAD = %v", ch)
	}
	if b, err := os.ReadFile(filepath.Join(target, manifest.FileName)); err != nil || string(b) != cellV2 {
		t.Fatalf("checked-out Cell.json: %q, %v", b, err)
	}
	if gitBin, err := exec.LookPath("git"); err == nil {
		out, err := exec.Command(gitBin, "-C", target, "log", "--format=%H %s").CombinedOutput()
		if err != nil || strings.Count(string(out), "\n") != 2 || !strings.HasPrefix(string(out), head.Hash().String()) {
			t.Fatalf("git log: %s %v", out, err)
		}
		out, err = exec.Command(gitBin, "-C", target, "status", "--porcelain").CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Fatalf("git status: %q %v", out, err)
		}
	}

	// A non-empty target is refused and left alone.
	busy := t.TempDir()
	writeFile(t, filepath.Join(busy, "keep.txt"), "mine")
	if err := f.Clone(ctx, c, []peer.ID{srv.ID()}, busy); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("non-empty target: %v", err)
	}
	if ents, _ := os.ReadDir(busy); len(ents) != 1 {
		t.Fatalf("target changed: %v", ents)
	}
	// An empty directory is fine.
	if err := f.Clone(ctx, c, nil, t.TempDir()); err != nil {
		t.Fatalf("empty target (from cache): %v", err)
	}
	// A failed clone leaves nothing behind.
	f2, _ := NewFetcher(client, nil, "", nil)
	missing := filepath.Join(t.TempDir(), "x")
	if err := f2.Clone(ctx, c, []peer.ID{bad.ID()}, missing); err == nil {
		t.Fatal("clone from a liar succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed clone left %s", missing)
	}
}

// TestServerClose: after Close the host no longer handles ObjectProtocol,
// so a fetch from it fails instead of reaching the closed server.
func TestServerClose(t *testing.T) {
	dir, r := goldenRepo(t)
	head, _ := r.Head()
	srv, client := newHost(t), newHost(t)
	s := NewServer(srv, nil)
	if err := s.ServeDir(dir, head.Hash()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(srv.Mux().Protocols(), ObjectProtocol) {
		t.Fatalf("NewServer did not register %s", ObjectProtocol)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(srv.Mux().Protocols(), ObjectProtocol) {
		t.Fatalf("%s still handled after Close", ObjectProtocol)
	}
	link(client, srv)
	f, _ := NewFetcher(client, nil, "", nil)
	if _, err := fetchBatch(context.Background(), client, srv.ID(), []plumbing.Hash{head.Hash()}, f.cache); err == nil {
		t.Fatal("fetch from a closed server succeeded")
	}
}
