package gitobj

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/libp2p/go-libp2p/core/peer"
)

// bigRepo writes a repository of dirs×files blobs in dirs trees, with a
// Cell.json, under one commit, straight through the object store. It
// returns the directory, the commit and the number of objects.
func bigRepo(tb testing.TB, dirs, files int) (string, plumbing.Hash, int) {
	tb.Helper()
	dir := tb.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		tb.Fatal(err)
	}
	put := func(o plumbing.EncodedObject) plumbing.Hash {
		h, err := r.Storer.SetEncodedObject(o)
		if err != nil {
			tb.Fatal(err)
		}
		return h
	}
	blob := func(s string) plumbing.Hash {
		o := r.Storer.NewEncodedObject()
		o.SetType(plumbing.BlobObject)
		w, _ := o.Writer()
		fmt.Fprint(w, s)
		w.Close()
		return put(o)
	}
	tree := func(entries []object.TreeEntry) plumbing.Hash {
		o := r.Storer.NewEncodedObject()
		if err := (&object.Tree{Entries: entries}).Encode(o); err != nil {
			tb.Fatal(err)
		}
		return put(o)
	}
	var root []object.TreeEntry
	root = append(root, object.TreeEntry{Name: manifest.FileName, Mode: filemode.Regular, Hash: blob(`{"name":"acme/big","version":"1.0.0"}`)})
	n := 1
	for d := range dirs {
		var ents []object.TreeEntry
		for f := range files {
			ents = append(ents, object.TreeEntry{Name: fmt.Sprintf("f%04d.go", f), Mode: filemode.Regular,
				Hash: blob(fmt.Sprintf("package d%d\n\n// file %d of dir %d\nvar X%d = %d\n", d, f, d, f, d*f))})
			n++
		}
		root = append(root, object.TreeEntry{Name: fmt.Sprintf("d%03d", d), Mode: filemode.Dir, Hash: tree(ents)})
		n++
	}
	// Tree entries must be sorted by name; "Cell.json" < "d000" already.
	rootHash := tree(root)
	sig := object.Signature{Name: "Ada", Email: "ada@example.com", When: time.Unix(1700000000, 0).UTC()}
	o := r.Storer.NewEncodedObject()
	if err := (&object.Commit{Author: sig, Committer: sig, Message: "big\n", TreeHash: rootHash}).Encode(o); err != nil {
		tb.Fatal(err)
	}
	c := put(o)
	if err := r.Storer.SetReference(plumbing.NewHashReference(plumbing.Master, c)); err != nil {
		tb.Fatal(err)
	}
	return dir, c, n + 2
}

// BenchmarkFetchManifest: commit → tree → Cell.json from one peer on
// loopback, with a cold cache every time (3 objects, 3 round trips).
func BenchmarkFetchManifest(b *testing.B) {
	dir, c, _ := bigRepo(b, 4, 10)
	srv, client := newHost(b), newHost(b)
	s := newServer(srv, nil, noLimits) // measure the protocol, not the pacing
	if err := s.ServeDir(dir, c); err != nil {
		b.Fatal(err)
	}
	link(client, srv)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		f, _ := NewFetcher(client, nil, "", nil)
		if _, _, err := f.Manifest(ctx, manifest.CIDOf(c), []peer.ID{srv.ID()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClone: every object of a 3,000-object repository from one peer
// on loopback, written out as a checked-out repository.
func BenchmarkClone(b *testing.B) {
	dir, c, objects := bigRepo(b, 60, 50)
	srv, client := newHost(b), newHost(b)
	s := newServer(srv, nil, noLimits) // measure the protocol, not the pacing
	if err := s.ServeDir(dir, c); err != nil {
		b.Fatal(err)
	}
	link(client, srv)
	ctx := context.Background()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		f, _ := NewFetcher(client, nil, "", nil)
		i++
		if err := f.Clone(ctx, manifest.CIDOf(c), []peer.ID{srv.ID()}, filepath.Join(b.TempDir(), fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(objects), "objects")
	b.ReportMetric(float64(objects)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
}
