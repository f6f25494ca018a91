package node

import (
	"fmt"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// Connection manager watermarks: a public DHT server keeps up to 400
// connections and trims to 100, sparing connections younger than a minute.
const (
	connLow   = 100
	connHigh  = 400
	connGrace = time.Minute
)

// newHost builds the libp2p host: TCP and QUIC with libp2p's default
// security (Noise, TLS) and muxers, the connection manager above, and a
// resource manager with libp2p's autoscaled defaults plus limits on our own
// protocols.
//
// The listen addresses are checked first (CheckListen), so that a bad one
// gives one clear error instead of libp2p's, and a fixed port that another
// process holds is refused: libp2p's TCP transport sets SO_REUSEPORT,
// with which a second process can bind a port the first one listens on,
// and then dials itself. refused, when not nil, counts what the resource
// manager refuses.
func newHost(sk crypto.PrivKey, listen []string, refused rcmgr.TraceReporter) (host.Host, error) {
	if len(listen) == 0 {
		listen = DefaultListen
	}
	if err := CheckListen(listen); err != nil {
		return nil, err
	}
	if err := checkPortsFree(listen); err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(connLow, connHigh, connmgr.WithGracePeriod(connGrace))
	if err != nil {
		return nil, err
	}
	var rmOpts []rcmgr.Option
	if refused != nil {
		rmOpts = append(rmOpts, rcmgr.WithTraceReporter(refused))
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits()), rmOpts...)
	if err != nil {
		return nil, err
	}
	h, err := libp2p.New(
		libp2p.Identity(sk),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
	)
	if err != nil {
		rm.Close()
		msg := err.Error()
		if strings.Contains(msg, "address already in use") {
			return nil, fmt.Errorf("node: listen %s: address already in use (pick another port with --listen)", strings.Join(listen, ", "))
		}
		return nil, fmt.Errorf("node: start libp2p host on %s: %w", strings.Join(listen, ", "), err)
	}
	return h, nil
}

// limits are libp2p's autoscaled defaults with per-protocol limits for the
// instances protocol (one short request per stream, so few concurrent
// streams per peer) and the git object protocol (responses up to tens of
// MiB, so a memory bound).
func limits() rcmgr.ConcreteLimitConfig {
	cfg := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&cfg)
	cfg.AddProtocolLimit(dht.ProtocolID,
		rcmgr.BaseLimit{Streams: 2048, StreamsInbound: 1024, StreamsOutbound: 1024, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{Streams: 1024, StreamsInbound: 512, StreamsOutbound: 512, Memory: 32 << 20})
	cfg.AddProtocolPeerLimit(dht.ProtocolID,
		rcmgr.BaseLimit{Streams: 48, StreamsInbound: 16, StreamsOutbound: 32, Memory: 4 << 20},
		rcmgr.BaseLimitIncrease{})
	cfg.AddProtocolLimit(gitobj.ObjectProtocol,
		rcmgr.BaseLimit{Streams: 256, StreamsInbound: 128, StreamsOutbound: 128, Memory: 256 << 20},
		rcmgr.BaseLimitIncrease{Streams: 128, StreamsInbound: 64, StreamsOutbound: 64, Memory: 64 << 20})
	cfg.AddProtocolPeerLimit(gitobj.ObjectProtocol,
		rcmgr.BaseLimit{Streams: 8, StreamsInbound: 4, StreamsOutbound: 4, Memory: 96 << 20},
		rcmgr.BaseLimitIncrease{})
	return cfg.AutoScale()
}
