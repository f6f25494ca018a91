package gitobj

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/footprint"
	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"
)

// hostileFull runs the object-server attacks at the size (a 30 MB
// blob) instead of CI's (2 MiB): CELLNODE_HOSTILE_FULL=1.
var hostileFull = os.Getenv("CELLNODE_HOSTILE_FULL") != ""

// bigBlobRepo makes a repository whose HEAD holds Cell.json and a random
// (incompressible) blob of size bytes, and returns it with HEAD and the
// blob's hash.
func bigBlobRepo(t *testing.T, size int) (string, plumbing.Hash, plumbing.Hash) {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, size)
	rand.Read(big)
	head := commit(t, r, map[string]string{manifest.FileName: cellV1, "big.bin": string(big)}, "big\n",
		"2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05+02:00")
	return dir, head, plumbing.ComputeHash(plumbing.BlobObject, big)
}

// ask opens a stream to p, sends a request for hashes, reads the answer
// until the server ends it or deadline passes, and returns the bytes read.
func ask(ctx context.Context, h host.Host, p peer.ID, hashes [][]byte, deadline time.Duration) (int64, error) {
	s, err := h.NewStream(ctx, p, ObjectProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(deadline))
	b, _ := objEnc.Marshal(objectRequest{Hashes: hashes})
	if err := msgio.NewVarintWriter(s).WriteMsg(b); err != nil {
		return 0, err
	}
	_ = s.CloseWrite()
	n, err := io.Copy(io.Discard, s)
	_ = s.Reset()
	return n, err
}

func repeat(h plumbing.Hash, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Clone(h[:])
	}
	return out
}

// TestHostilePeerObjects attacks the git object server as the issue did:
// one request asking 512 times for one big blob, three peers with four
// streams each doing the same again and again, and garbage streams. The
// server sends each object once per request, at most RequestBytes per
// request, paces each peer, keeps its heap under 200 MB and its descriptors
// under 4,096, and still serves an honest clone afterwards.
func TestHostilePeerObjects(t *testing.T) {
	size := 2 << 20
	if hostileFull {
		size = 30 << 20
	}
	dir, head, blob := bigBlobRepo(t, size)
	srvHost := newHost(t)
	srv := NewServer(srvHost, nil)
	if err := srv.ServeDir(dir, head); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	attackers := make([]host.Host, 3)
	for i := range attackers {
		attackers[i] = newHost(t)
		link(attackers[i], srvHost)
		if err := attackers[i].Connect(ctx, peer.AddrInfo{ID: srvHost.ID(), Addrs: srvHost.Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	heap0, fds0 := footprint.Heap(), footprint.FDs()
	peak := footprint.Start(0)

	// 1. One request, 512 times the same blob (10,759 bytes asked).
	req, _ := objEnc.Marshal(objectRequest{Hashes: repeat(blob, MaxBatch)})
	one, _ := ask(ctx, attackers[0], srvHost.ID(), repeat(blob, MaxBatch), 20*time.Second)
	t.Logf("one %d-byte request for %d × a %d MiB blob: %.1f MiB sent", len(req)+2, MaxBatch, size>>20, float64(one)/footprint.MB)
	if one > int64(size)+64<<10 {
		t.Errorf("one request made the server send %d bytes for one %d-byte blob", one, size)
	}

	// 2. Three peers, four streams each, each stream asking again.
	rounds := 3
	var total atomic.Int64
	var refused atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for _, a := range attackers {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					n, err := ask(ctx, a, srvHost.ID(), repeat(blob, MaxBatch), 20*time.Second)
					total.Add(n)
					if err != nil {
						refused.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	// 3. Garbage streams: random bytes, a huge length prefix, a request of
	// more than MaxBatch hashes, a half request left to stall.
	junk := [][]byte{make([]byte, 500), binary.AppendUvarint(nil, 1<<30)}
	rand.Read(junk[0])
	tooMany, _ := objEnc.Marshal(objectRequest{Hashes: repeat(blob, MaxBatch+1)})
	junk = append(junk, binary.AppendUvarint(nil, uint64(len(tooMany))), tooMany[:100])
	for i := range 40 {
		s, err := attackers[i%3].NewStream(ctx, srvHost.ID(), ObjectProtocol)
		if err != nil {
			continue
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		s.Write(junk[i%len(junk)])
		s.CloseWrite()
		io.Copy(io.Discard, s)
		s.Reset()
	}
	peakHeap, peakFDs := peak.Stop()
	after := footprint.Heap()
	t.Logf("3 peers × 4 streams × %d requests: %.1f MiB sent in %v (%d streams refused or cut); heap %d MB → peak %d MB (garbage included), %d MB after; descriptors %d → peak %d",
		rounds, float64(total.Load())/footprint.MB, elapsed.Round(time.Millisecond), refused.Load(),
		heap0/footprint.MB, peakHeap/footprint.MB, after/footprint.MB, fds0, peakFDs)

	// Each peer gets at most a burst of RequestBytes plus peerBytes per
	// second, and each request at most RequestBytes.
	perPeer := float64(RequestBytes) + peerBytes*elapsed.Seconds()
	if bound := int64(3*perPeer) + 64<<10; total.Load() > bound {
		t.Errorf("three peers received %d bytes in %v, bound %d", total.Load(), elapsed, bound)
	}
	if peakHeap > 200*footprint.MB {
		t.Errorf("heap reached %d MB", peakHeap/footprint.MB)
	}
	if after > heap0+32*footprint.MB {
		t.Errorf("heap still %d MB after the attacks (was %d)", after/footprint.MB, heap0/footprint.MB)
	}
	if peakFDs > 4096 || peakFDs > fds0+256 {
		t.Errorf("descriptors reached %d (were %d)", peakFDs, fds0)
	}

	// An honest peer still clones, the big blob included.
	honest := newHost(t)
	link(honest, srvHost)
	f, _ := NewFetcher(honest, nil, "", nil)
	clone := filepath.Join(t.TempDir(), "clone")
	if err := f.Clone(ctx, manifest.CIDOf(head), []peer.ID{srvHost.ID()}, clone); err != nil {
		t.Fatalf("honest clone after the attacks: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(clone, "big.bin")); err != nil || fi.Size() != int64(size) {
		t.Fatalf("cloned big.bin: %v, %v", fi, err)
	}
	_ = fmt.Sprint
}
