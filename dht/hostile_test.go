package dht

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"github.com/cellnode/cellnode/internal/poll"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio"

	"github.com/cellnode/cellnode/internal/footprint"
)

func loopbackHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// garbage are the malformed requests a hostile peer sends on the
// instances protocol: each writes to a fresh stream and closes its side.
var garbage = map[string]func(w io.Writer){
	"length prefix only": func(w io.Writer) { w.Write(binary.AppendUvarint(nil, 200)) },
	"random bytes": func(w io.Writer) {
		b := make([]byte, 300)
		rand.Read(b)
		w.Write(b)
	},
	"huge length prefix": func(w io.Writer) {
		w.Write(binary.AppendUvarint(nil, 64<<20))
		w.Write(make([]byte, 100))
	},
	"truncated frame": func(w io.Writer) {
		w.Write(binary.AppendUvarint(nil, 1000))
		w.Write(make([]byte, 10))
	},
	"not CBOR": func(w io.Writer) { msgio.NewVarintWriter(w).WriteMsg([]byte("\xff\xff\xff not cbor")) },
	"CBOR of the wrong shape": func(w io.Writer) {
		msgio.NewVarintWriter(w).WriteMsg([]byte{0x83, 0x01, 0x02, 0x03}) // [1, 2, 3]
	},
	"unknown op": func(w io.Writer) {
		b, _ := msgEnc.Marshal(request{Op: 99, Name: "acme/exchange"})
		msgio.NewVarintWriter(w).WriteMsg(b)
	},
}

// TestHostilePeerInstances: one peer floods a storer with malformed
// requests of every kind over raw libp2p streams. Every one is counted as
// malformed and takes a token of the peer's rate limiter, so most of the
// flood is refused as rate limited; the storer's heap and descriptors stay
// bounded, and an honest peer is still served.
func TestHostilePeerInstances(t *testing.T) {
	srvHost := loopbackHost(t)
	d, err := New(srvHost, Config{Mode: ModeServer, RequestTimeout: time.Second, DisableAutoRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	evil := loopbackHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := evil.Connect(ctx, peer.AddrInfo{ID: srvHost.ID(), Addrs: srvHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	heap0, fds0 := footprint.Heap(), footprint.FDs()
	peak := footprint.Start(0)

	const rounds = 60 // of every kind: 420 streams, and 50 that stall
	kinds := make([]string, 0, len(garbage))
	for k := range garbage {
		kinds = append(kinds, k)
	}
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				s, err := evil.NewStream(ctx, srvHost.ID(), ProtocolID)
				if err != nil {
					t.Errorf("open stream: %v", err)
					continue
				}
				garbage[k](s)
				s.CloseWrite()
				io.Copy(io.Discard, s)
				s.Close()
			}
		}()
	}
	sent := 0
	for range rounds {
		for _, k := range kinds {
			jobs <- k
			sent++
		}
	}
	close(jobs)
	// Streams that send half a request and stall are reset at the
	// request timeout, and counted too.
	for range 50 {
		wg.Add(1)
		sent++
		go func() {
			defer wg.Done()
			s, err := evil.NewStream(ctx, srvHost.ID(), ProtocolID)
			if err != nil {
				t.Errorf("open stream: %v", err)
				return
			}
			s.Write(binary.AppendUvarint(nil, 100))
			io.Copy(io.Discard, s) // returns when the server resets it
			s.Close()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	peakHeap, peakFDs := peak.Stop()

	// The server counts a stream once its handler ran; wait for the last.
	var c map[string]uint64
	poll.T(t, "every malformed stream counted", func() bool {
		c = d.Counters()
		return c["request_malformed"] >= uint64(sent)
	})
	t.Logf("%d malformed streams in %v: counters %v; heap %d → peak %d MB, descriptors %d → peak %d",
		sent, elapsed.Round(time.Millisecond), c, heap0/footprint.MB, peakHeap/footprint.MB, fds0, peakFDs)
	if c["request_malformed"] != uint64(sent) {
		t.Errorf("request_malformed = %d, want %d (every malformed request counted)", c["request_malformed"], sent)
	}
	// Burst 5 × PeerRate, refilled at PeerRate per second.
	allowedMax := uint64(5*d.cfg.PeerRate + d.cfg.PeerRate*elapsed.Seconds() + 1)
	if limited := c["rate_limited"]; limited+allowedMax < uint64(sent) {
		t.Errorf("rate_limited = %d of %d: more than %d let through in %v", limited, sent, allowedMax, elapsed)
	}
	if peakHeap > heap0+64*footprint.MB {
		t.Errorf("heap grew from %d to %d MB", heap0/footprint.MB, peakHeap/footprint.MB)
	}
	if peakFDs > fds0+256 {
		t.Errorf("descriptors grew from %d to %d", fds0, peakFDs)
	}

	// An honest peer is served (its own bucket is full).
	honest := loopbackHost(t)
	if err := honest.Connect(ctx, peer.AddrInfo{ID: srvHost.ID(), Addrs: srvHost.Addrs()}); err != nil {
		t.Fatal(err)
	}
	hd, err := New(honest, Config{Mode: ModeClient, DisableAutoRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hd.Close() })
	if _, err := hd.call(ctx, srvHost.ID(), request{Op: opGet, Name: "acme/exchange"}); err != nil {
		t.Fatalf("honest GET after the flood: %v", err)
	}
}
