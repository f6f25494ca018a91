package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"github.com/cellnode/cellnode/internal/wire"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
)

// framed returns v as one varint-length-prefixed CBOR message.
func framed(v any) []byte {
	b, err := cbor.Marshal(v)
	if err != nil {
		panic(err)
	}
	var buf bytes.Buffer
	_ = msgio.NewVarintWriter(&buf).WriteMsg(b)
	return buf.Bytes()
}

// fuzzRecord signs a record of name by a key derived from seed.
func fuzzRecord(f *testing.F, seed byte, name string, d func(ed25519.PublicKey) *record.Delegation) *record.Record {
	f.Helper()
	var s [ed25519.SeedSize]byte
	s[0] = seed
	priv := ed25519.NewKeyFromSeed(s[:])
	now := time.Now()
	r := record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey), Endpoints: []string{"127.0.0.1:1"},
		Seq: 1, Issued: now, Expires: now.Add(time.Minute)}
	if d != nil {
		r.Delegation = d(r.PublicKey)
	}
	out, err := record.Sign(priv, r)
	if err != nil {
		f.Fatal(err)
	}
	return out
}

func fuzzDelegation(f *testing.F) (ed25519.PublicKey, func(ed25519.PublicKey) *record.Delegation) {
	var s [ed25519.SeedSize]byte
	s[0] = 200
	pub := ed25519.NewKeyFromSeed(s[:])
	return pub.Public().(ed25519.PublicKey), func(node ed25519.PublicKey) *record.Delegation {
		d, err := record.SignDelegation(pub, record.Delegation{Name: "acme/exchange", Node: node, Issued: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)})
		if err != nil {
			f.Fatal(err)
		}
		return d
	}
}

// FuzzInstancesRequest sends arbitrary bytes (length prefix included) as a
// request of the instances protocol to a DHT server: the decoder every
// storer runs on input from any peer. The server must not panic, must
// answer with a response that decodes (or reset the stream), and must
// still answer a good GET afterwards.
func FuzzInstancesRequest(f *testing.F) {
	pub, deleg := fuzzDelegation(f)
	rec := fuzzRecord(f, 1, "acme/exchange", deleg)
	f.Add(framed(wire.Request{Op: wire.OpPut, Name: "acme/exchange", Record: rec.Bytes()}))
	f.Add(framed(wire.Request{Op: wire.OpPut, Name: "acme/exchange", Record: rec.Bytes(), Publisher: pub}))
	f.Add(framed(wire.Request{Op: wire.OpGet, Name: "acme/exchange", Publisher: pub}))
	f.Add(framed(wire.Request{Op: wire.OpGet, Name: "../../etc"}))
	f.Add(framed(wire.Request{Op: wire.OpPut, Name: "acme/exchange", Publisher: []byte{1, 2, 3}}))
	f.Add(framed(wire.Request{Op: 7}))
	f.Add(framed(map[int]any{1: 2, 2: "acme/exchange", 9: []any{1, "x"}}))
	f.Add(binary.AppendUvarint(nil, 1<<20))
	f.Add([]byte{0x03, 0xa1, 0x01})

	mn := mocknet.New()
	f.Cleanup(func() { mn.Close() })
	srvHost, client := fuzzHost(f, mn), fuzzHost(f, mn)
	if err := mn.LinkAll(); err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Host: srvHost, NoRuntimeDir: true,
		DHT: dht.Config{Mode: dht.ModeServer, Flat: true, DisableAutoRefresh: true, PeerRate: 1e9}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	call := func(t *testing.T, b []byte) (*wire.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := client.NewStream(ctx, srvHost.ID(), dht.ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		// Write while reading: the server answers once it has read one
		// request, and mocknet's streams do not buffer what it leaves.
		go func() {
			_, _ = s.Write(b)
			_ = s.CloseWrite()
		}()
		msg, err := msgio.NewVarintReaderSize(s, 4<<20).ReadMsg()
		if err != nil {
			return nil, err // the server reset the stream
		}
		var resp wire.Response
		if err := cbor.Unmarshal(msg, &resp); err != nil {
			t.Fatalf("response does not decode: %v", err)
		}
		return &resp, nil
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := call(t, b)
		if err == nil {
			for _, raw := range resp.Records {
				if _, err := record.Verify(raw, "", time.Now()); err != nil {
					t.Fatalf("server served a record that does not verify: %v", err)
				}
			}
		}
		if resp, err := call(t, framed(wire.Request{Op: wire.OpGet, Name: "acme/exchange"})); err != nil || resp.Error != "" {
			t.Fatalf("server no longer answers a good GET: %v %+v", err, resp)
		}
	})
}

// FuzzInstancesResponse makes a peer answer a node's find with arbitrary
// bytes (length prefix included): the decoder every finder runs on the
// answers of the peers closest to a cell's key. The find must not panic
// and must return only records that verify, of the cell asked for.
func FuzzInstancesResponse(f *testing.F) {
	pub, deleg := fuzzDelegation(f)
	good := fuzzRecord(f, 1, "acme/exchange", deleg)
	other := fuzzRecord(f, 2, "acme/other", nil)
	f.Add(framed(wire.Response{Records: [][]byte{good.Bytes()}}))
	f.Add(framed(wire.Response{Records: [][]byte{good.Bytes(), other.Bytes(), []byte("junk"), {}}}))
	f.Add(framed(wire.Response{Records: [][]byte{good.Bytes()}, Core: true}))
	f.Add(framed(wire.Response{Error: "rate limited"}))
	f.Add(framed(wire.Response{Records: make([][]byte, 4097)}))
	f.Add(binary.AppendUvarint(nil, 2<<20+1))
	f.Add([]byte{})

	mn := mocknet.New()
	f.Cleanup(func() { mn.Close() })
	fh, liar := fuzzHost(f, mn), fuzzHost(f, mn)
	if err := mn.LinkAll(); err != nil {
		f.Fatal(err)
	}
	finder, err := New(Config{Host: fh, NoRuntimeDir: true, DHT: dht.Config{Mode: dht.ModeServer, Flat: true, DisableAutoRefresh: true}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { finder.Close() })
	// The liar runs a real node, so that the finder's routing table takes
	// it and its lookups return it; only its instances handler lies.
	ln, err := New(Config{Host: liar, NoRuntimeDir: true, DHT: dht.Config{Mode: dht.ModeServer, Flat: true, DisableAutoRefresh: true}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	var answer atomic.Pointer[[]byte]
	liar.SetStreamHandler(dht.ProtocolID, func(s network.Stream) {
		defer s.Close()
		_, _ = msgio.NewVarintReaderSize(s, 8<<10).ReadMsg()
		_, _ = s.Write(*answer.Load())
	})
	if err := fh.Connect(context.Background(), peer.AddrInfo{ID: liar.ID()}); err != nil {
		f.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for finder.DHT().Kad().RoutingTable().Size() == 0 {
		if time.Now().After(deadline) {
			f.Fatal("the liar never entered the finder's routing table")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		answer.Store(&b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, pubs := range [][]ed25519.PublicKey{nil, {pub}} {
			recs, _, _ := finder.DHT().Find(ctx, "acme/exchange", pubs, nil)
			for _, r := range recs {
				if _, err := record.Verify(r.Bytes(), "acme/exchange", time.Now()); err != nil {
					t.Fatalf("find returned a record that does not verify: %v", err)
				}
				if pubs != nil && !pub.Equal(r.Publisher()) {
					t.Fatal("a pinned find returned a record of another publisher")
				}
			}
		}
	})
}
