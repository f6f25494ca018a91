package dht

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// TestValueRecordsRefused: a node with the default Config (every node but
// the simulator's) refuses kad-dht value records under /cell/, from its
// own PutValue and from a peer's, while a node with Config.ValueRecords (the
// simulator's baseline) takes them. Only the set-valued store, within its
// quotas, holds instances in production.
func TestValueRecordsRefused(t *testing.T) {
	clk := &clock{t: time.Now()}
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	start := func(i int, cfg Config) *testNode {
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := mn.AddPeer(sk, ma.StringCast("/ip6/100::"+string(rune('1'+i))+"/tcp/4242"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Mode, cfg.Flat, cfg.DisableAutoRefresh, cfg.Store.Now = ModeServer, true, true, clk.Now
		d, err := New(h, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		raw, _ := sk.Raw()
		return &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
	}
	sim := start(0, Config{ValueRecords: true})
	prod := start(1, Config{})
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := sim.host.Connect(ctx, peer.AddrInfo{ID: prod.host.ID()}); err != nil {
		t.Fatal(err)
	}
	poll.T(t, "routing tables", func() bool {
		return sim.dht.Kad().RoutingTable().Size() > 0 && prod.dht.Kad().RoutingTable().Size() > 0
	})

	own := prod.record(t, "acme/exchange", 1, clk.Now(), "10.0.0.1:1")
	if err := prod.dht.Kad().PutValue(ctx, ValueKey(own), own.Bytes()); !errors.Is(err, ErrValueRecord) {
		t.Fatalf("production node's own PutValue = %v, want %v", err, ErrValueRecord)
	}

	rec := sim.record(t, "acme/exchange", 1, clk.Now(), "10.0.0.2:1")
	key := ValueKey(rec)
	// The simulator's node stores it and sends it to its closest peer, the
	// production node, which refuses it.
	if err := sim.dht.Kad().PutValue(ctx, key, rec.Bytes()); err != nil {
		t.Fatalf("simulator node's PutValue: %v", err)
	}
	if got, err := sim.dht.Kad().GetValue(ctx, key); err != nil || string(got) != string(rec.Bytes()) {
		t.Fatalf("simulator node's GetValue = %d bytes, %v; want its record", len(got), err)
	}
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if got, err := prod.dht.Kad().GetValue(gctx, key); err == nil {
		t.Fatalf("production node's GetValue returned %d bytes of a value record; want none", len(got))
	}
}
