package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// startLoopbackHost starts a host with newHost on loopback TCP and QUIC;
// sk nil means a new key.
func startLoopbackHost(t *testing.T, sk crypto.PrivKey) host.Host {
	t.Helper()
	if sk == nil {
		var err error
		if sk, _, err = crypto.GenerateEd25519Key(nil); err != nil {
			t.Fatal(err)
		}
	}
	h, _, err := newHost(sk, []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestDialOfGonePeerEnds: a dial of a peer whose process is gone and
// that is known only by its QUIC address (which answers nothing) gives up
// after localDialTimeout on a private network, not libp2p's 5 s: the
// caller's context here ends after 4 s, and the dial must have failed
// before. (With its TCP address known too, goneDials ends the dial
// sooner: TestDialOfGonePeerIsCutShort.)
func TestDialOfGonePeerEnds(t *testing.T) {
	dialer, gone := startLoopbackHost(t, nil), startLoopbackHost(t, nil)
	for _, a := range gone.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			dialer.Peerstore().AddAddr(gone.ID(), a, peerstore.TempAddrTTL)
		}
	}
	if len(dialer.Peerstore().Addrs(gone.ID())) == 0 {
		t.Fatalf("no QUIC address among %v", gone.Addrs())
	}
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
