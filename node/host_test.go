package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// TestDialOfGonePeerEnds: a dial of a peer whose process is gone (its TCP
// port refuses, its QUIC port answers nothing) gives up after
// localDialTimeout on a private network, not libp2p's 5 s: the caller's
// context here ends after 4 s, and the dial must have failed before.
func TestDialOfGonePeerEnds(t *testing.T) {
	start := func() host.Host {
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := newHost(sk, []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	dialer, gone := start(), start()
	dialer.Peerstore().AddAddrs(gone.ID(), gone.Addrs(), peerstore.TempAddrTTL)
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err := dialer.Network().DialPeer(ctx, gone.ID())
	if err == nil {
		t.Fatal("a dial of a closed host succeeded")
	}
	if ctx.Err() != nil {
		t.Fatalf("the dial of a gone peer lasted until the caller gave up: %v", err)
	}
}
