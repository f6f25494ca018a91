package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// session is how a one-shot command reaches the network: through the node
// running on this machine with the same home (its local API), or through a
// short-lived DHT client of its own.
type session struct {
	client *node.Client
	n      *node.Node
	stderr io.Writer // warnings: instances of the local API's answer that did not verify
}

// openSession uses the local node when useLocal is set, one runs (with the
// same home, else the machine's agent at $CELLNODE_API or its default
// socket), and no --bootstrap was given; otherwise it starts and
// bootstraps an ephemeral node. Being offline is not an error: finds then
// see local cells only.
func openSession(ctx context.Context, e *env, nf *netFlags, useLocal bool) (*session, error) {
	home := nf.home
	if home == "" {
		home = node.DefaultHome()
	}
	if useLocal && len(nf.bootstrap) == 0 {
		if cl, err := node.Dial(home); err == nil {
			return &session{client: cl, stderr: e.stderr}, nil
		}
		if cl, err := node.DialAPI(""); err == nil { // the machine's agent
			return &session{client: cl}, nil
		}
	}
	log := e.logger(slog.LevelWarn)
	peers, err := nf.peers(ctx, log)
	if err != nil {
		return nil, err
	}
	n, err := node.New(node.Config{
		Home: home, Ephemeral: true, Bootstrap: peers, Logger: log,
		Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		DHT:    dht.Config{Mode: dht.ModeClient},
	})
	if err != nil {
		return nil, err
	}
	if nf.offlineByChoice() { // not even the peers seen before
		return &session{n: n}, nil
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = n.Bootstrap(bctx)
	cancel()
	if err != nil && !errors.Is(err, node.ErrOffline) {
		n.Close()
		return nil, err
	}
	if err != nil {
		log.Debug("bootstrap", "err", err)
	}
	return &session{n: n, stderr: e.stderr}, nil
}

func (s *session) find(ctx context.Context, name string, opts node.FindOptions) (*node.FindResult, error) {
	reply, err := s.findSigned(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return reply.Result(), nil
}

// findSigned finds name with each instance's signed record. What a running
// node's API answers is verified here again (node.Client.Find): instances
// whose records fail are dropped, with a warning each.
func (s *session) findSigned(ctx context.Context, name string, opts node.FindOptions) (*node.FindReply, error) {
	if s.client == nil {
		return s.n.FindSigned(ctx, name, opts)
	}
	reply, err := s.client.Find(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	for _, d := range reply.Dropped {
		fmt.Fprintf(s.stderr, "cellnode: warning: the local node's answer did not verify: %s; dropped\n", d)
	}
	return reply, nil
}

func (s *session) manifest(ctx context.Context, c cid.Cid, hints []peer.ID) (*node.ManifestInfo, error) {
	if s.client != nil {
		return s.client.ManifestInfo(ctx, c.String(), hints)
	}
	return s.n.ManifestInfo(ctx, c, hints)
}

func (s *session) close() {
	if s.n != nil {
		s.n.Close()
	}
}
