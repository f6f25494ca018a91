package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
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
	h, _, err := newHost(sk, []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, nil, true)
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

// TestEphemeralNodeCollectsNoLibp2pMetrics: a one-shot command's ephemeral
// node (no local API, no metrics listener) leaves libp2p's metrics off,
// while a node that serves metrics collects them. Each case runs in a
// process of its own: Prometheus's default registry, where libp2p's
// collectors go, is process-wide, and other tests' nodes fill it.
func TestEphemeralNodeCollectsNoLibp2pMetrics(t *testing.T) {
	if mode := os.Getenv("CELLNODE_TEST_LIBP2P_METRICS"); mode != "" {
		libp2pMetricsChild(t, mode == "ephemeral")
		return
	}
	for _, mode := range []string{"ephemeral", "serving"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEphemeralNodeCollectsNoLibp2pMetrics$", "-test.v")
		cmd.Env = append(os.Environ(), "CELLNODE_TEST_LIBP2P_METRICS="+mode)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", mode, err, out)
		}
		m := regexp.MustCompile(`libp2p metric families: (\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no count in the child's output:\n%s", mode, out)
		}
		got, _ := strconv.Atoi(string(m[1]))
		if mode == "ephemeral" && got != 0 {
			t.Errorf("an ephemeral node collected %d libp2p metric families, want none", got)
		}
		if mode == "serving" && got == 0 {
			t.Errorf("a node serving metrics collected no libp2p metric families")
		}
	}
}

// libp2pMetricsChild starts two nodes, ephemeral or serving metrics,
// connects them, and prints how many libp2p metric families Prometheus's
// default registry holds, but for the event bus's.
func libp2pMetricsChild(t *testing.T, ephemeral bool) {
	var nodes []*Node
	for range 2 {
		cfg := Config{Home: t.TempDir(), NoRuntimeDir: true, Ephemeral: ephemeral,
			Listen: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}}
		if !ephemeral {
			cfg.Metrics = "127.0.0.1:0"
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := nodes[0].Host().Connect(ctx, peer.AddrInfo{ID: nodes[1].ID(), Addrs: nodes[1].Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, f := range fams {
		// libp2p registers its event bus's metrics whatever the option
		if strings.HasPrefix(f.GetName(), "libp2p_") && !strings.HasPrefix(f.GetName(), "libp2p_eventbus_") {
			count++
		}
	}
	fmt.Printf("libp2p metric families: %d\n", count)
}
