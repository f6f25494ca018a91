package gitobj

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
	"golang.org/x/time/rate"
)

// noLimits paces nothing: for benchmarks and fuzzing, which ask one peer
// for as much as it can serve.
var noLimits = limits{requestBytes: RequestBytes, inflight: inflightBytes,
	peerRequests: rate.Inf, peerBurst: 1, peerBytes: rate.Inf, totalBytes: rate.Inf}

// TestObjectFrameEncoding: a frame streamed by the server is byte for byte
// what the CBOR encoder makes of the same frame.
func TestObjectFrameEncoding(t *testing.T) {
	for _, size := range []int{0, 1, 23, 24, 255, 256, 65535, 65536, 1<<20 + 3} {
		for _, typ := range []plumbing.ObjectType{plumbing.CommitObject, plumbing.TreeObject, plumbing.BlobObject, plumbing.TagObject} {
			data := make([]byte, size)
			rand.Read(data)
			h := plumbing.ComputeHash(typ, data)
			var want, got bytes.Buffer
			b, _ := objEnc.Marshal(objectFrame{Hash: h[:], Type: int8(typ), Data: data})
			msgio.NewVarintWriter(&want).WriteMsg(b)
			if err := writeObjectFrame(&got, h[:], typ, int64(size), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("size %d type %v: streamed frame differs from the encoder's", size, typ)
			}
		}
	}
	// A reader that gives less than the size is an error, not a short frame.
	if err := writeObjectFrame(&bytes.Buffer{}, make([]byte, 20), plumbing.BlobObject, 10, strings.NewReader("short")); err == nil {
		t.Fatal("short object accepted")
	}
}

// blobsRepo makes a repository whose HEAD holds n random blobs of size
// bytes each.
func blobsRepo(t *testing.T, n, size int) (string, plumbing.Hash, []plumbing.Hash) {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{manifest.FileName: cellV1}
	var blobs []plumbing.Hash
	for i := range n {
		b := make([]byte, size)
		rand.Read(b)
		files[fmt.Sprintf("blob%d", i)] = string(b)
		blobs = append(blobs, plumbing.ComputeHash(plumbing.BlobObject, b))
	}
	head := commit(t, r, files, "blobs\n", "2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05+02:00")
	return dir, head, blobs
}

// TestServerBudgets: a request is served each object once and at most its
// byte budget; the fetcher asks again for the rest, so a clone of a
// repository larger than one request's budget still completes.
func TestServerBudgets(t *testing.T) {
	const size = 100 << 10
	dir, head, blobs := blobsRepo(t, 6, size)
	srvHost, client := newHost(t), newHost(t)
	lim := noLimits
	lim.requestBytes, lim.inflight = 250<<10, 250<<10
	srv := newServer(srvHost, nil, lim)
	if err := srv.ServeDir(dir, head); err != nil {
		t.Fatal(err)
	}
	link(client, srvHost)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var hashes [][]byte
	for _, b := range blobs {
		hashes = append(hashes, b[:], b[:])
	}
	n, err := ask(ctx, client, srvHost.ID(), hashes, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := srv.Stats()
	if st.Objects != 2 || st.Repeated != 6 || st.OverBudget != 4 || n > 2*size+4<<10 {
		t.Fatalf("one request for 6 blobs twice, budget 2.5 blobs: %d bytes sent, stats %+v", n, st)
	}
	f, _ := NewFetcher(client, nil, "", nil)
	if err := f.Clone(ctx, manifest.CIDOf(head), []peer.ID{srvHost.ID()}, filepath.Join(t.TempDir(), "c")); err != nil {
		t.Fatalf("clone across budgets: %v", err)
	}
	if st := srv.Stats(); st.Requests < 4 {
		t.Fatalf("clone took %d requests, want several", st.Requests)
	}
}

// TestServerInflight: many peers at once never have more than the
// node-wide in-flight budget being sent.
func TestServerInflight(t *testing.T) {
	const size = 200 << 10
	dir, head, blobs := blobsRepo(t, 4, size)
	srvHost := newHost(t)
	lim := noLimits
	lim.inflight = 2 * size
	srv := newServer(srvHost, nil, lim)
	if err := srv.ServeDir(dir, head); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var hashes [][]byte
	for _, b := range blobs {
		hashes = append(hashes, b[:])
	}
	var wg sync.WaitGroup
	for range 6 {
		c := newHost(t)
		link(c, srvHost)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := ask(ctx, c, srvHost.ID(), hashes, 20*time.Second); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st := srv.Stats()
	if st.Objects != 6*3*4 || st.PeakInflight > lim.inflight || st.PeakInflight < size {
		t.Fatalf("stats %+v, in-flight budget %d", st, lim.inflight)
	}
}

// TestServerRateLimit: a peer past its burst of streams is refused (the
// stream is reset) and counted; another peer is served.
func TestServerRateLimit(t *testing.T) {
	dir, head, blobs := blobsRepo(t, 1, 1000)
	srvHost, flooder, other := newHost(t), newHost(t), newHost(t)
	lim := noLimits
	lim.peerRequests, lim.peerBurst = rate.Every(time.Hour), 3
	srv := newServer(srvHost, nil, lim)
	if err := srv.ServeDir(dir, head); err != nil {
		t.Fatal(err)
	}
	link(flooder, srvHost)
	link(other, srvHost)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := [][]byte{blobs[0][:]}
	var served int
	for range 10 {
		if n, err := ask(ctx, flooder, srvHost.ID(), want, 10*time.Second); err == nil && n > 1000 {
			served++
		}
	}
	if served != 3 || srv.Stats().RateLimited != 7 {
		t.Fatalf("flooder served %d of 10 (burst 3), stats %+v", served, srv.Stats())
	}
	if n, err := ask(ctx, other, srvHost.ID(), want, 10*time.Second); err != nil || n < 1000 {
		t.Fatalf("another peer: %d bytes, %v", n, err)
	}
}
