package dht

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
)

// TestRequestDoesNotWaitForIdentify: a request to a peer on a fresh
// connection goes out right after the handshake, not after identify. The
// storer here never answers identify (its handler holds the stream), so a
// request that waited for identify would wait out its whole budget and
// fail; with the protocol proposed optimistically it is answered.
func TestRequestDoesNotWaitForIdentify(t *testing.T) {
	clk := &clock{t: time.Now()}
	cfg := Config{Mode: ModeServer, RequestTimeout: 5 * time.Second, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	finder, storer := loopbackNode(t, cfg), loopbackNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	storer.host.SetStreamHandler(identify.ID, func(s network.Stream) { <-ctx.Done(); _ = s.Reset() })
	finder.host.Peerstore().AddAddrs(storer.host.ID(), storer.host.Addrs(), peerstore.TempAddrTTL)

	rec := finder.record(t, "acme/ident", 1, clk.Now(), "127.0.0.1:9000")
	if _, err := finder.dht.call(ctx, storer.host.ID(), request{Op: opPut, Name: rec.Name, Record: rec.Bytes()}); err != nil {
		t.Fatalf("put on a connection whose identify never ends: %v", err)
	}
	resp, err := finder.dht.call(ctx, storer.host.ID(), request{Op: opGet, Name: rec.Name})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Records) != 1 {
		t.Fatalf("get answered %d records, want the one put", len(resp.Records))
	}
}

// TestRequestToPeerWithoutProtocol: a peer that does not speak the
// instances protocol fails the request at once with an error, and is not
// left waiting on.
func TestRequestToPeerWithoutProtocol(t *testing.T) {
	clk := &clock{t: time.Now()}
	cfg := Config{Mode: ModeServer, RequestTimeout: time.Minute, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
	finder, other := loopbackNode(t, cfg), loopbackNode(t, cfg)
	other.host.RemoveStreamHandler(ProtocolID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	finder.host.Peerstore().AddAddrs(other.host.ID(), other.host.Addrs(), peerstore.TempAddrTTL)
	_, err := finder.dht.call(ctx, other.host.ID(), request{Op: opGet, Name: "acme/none"})
	if err == nil {
		t.Fatal("a peer without the protocol answered")
	}
	if ctx.Err() != nil {
		t.Fatalf("the request waited out the test's deadline: %v", err)
	}
}
