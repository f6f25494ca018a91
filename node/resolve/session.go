package resolve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Session is how a one-shot command reaches the network: through the node
// running on this machine (its local API), or through a short-lived DHT
// client node of its own. A Session is safe for use by one goroutine.
type Session struct {
	client *node.Client
	n      *node.Node
	warn   io.Writer // instances of the local API's answer that did not verify
}

// SessionConfig says how to open a Session. Its zero value opens an
// ephemeral node with the default home that dials no bootstrap peer (only
// the peers seen before).
type SessionConfig struct {
	// Home is the state directory; "" means dirs.Home().
	Home string
	// Local uses the node running with Home, else the machine's agent
	// ($CELLNODE_API or its default socket), when one answers.
	Local bool
	// Peers returns the bootstrap peers; it is called only when no local
	// node is used. nil means none.
	Peers func(ctx context.Context) ([]peer.AddrInfo, error)
	// OfflineByChoice dials nobody, not even the peers seen before (the
	// bootstrap list "none").
	OfflineByChoice bool
	// Logger gets the ephemeral node's logs; nil discards them.
	Logger *slog.Logger
	// Warn is told of instances in a local node's answer that did not
	// verify; nil discards.
	Warn io.Writer
}

// Open opens a session. Being offline is not an error: finds then see the
// cells on this machine only.
func Open(ctx context.Context, cfg SessionConfig) (*Session, error) {
	home := cfg.Home
	if home == "" {
		home = dirs.Home()
	}
	warn := cfg.Warn
	if warn == nil {
		warn = io.Discard
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Local {
		if cl, err := node.Dial(home); err == nil {
			return &Session{client: cl, warn: warn}, nil
		}
		if cl, err := node.DialAPI(""); err == nil { // the machine's agent
			return &Session{client: cl, warn: warn}, nil
		}
	}
	var peers []peer.AddrInfo
	if cfg.Peers != nil {
		var err error
		if peers, err = cfg.Peers(ctx); err != nil {
			return nil, err
		}
	}
	n, err := node.New(node.Config{
		Home: home, Ephemeral: true, Bootstrap: peers, Logger: log,
		Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		DHT:    dht.Config{Mode: dht.ModeClient},
	})
	if err != nil {
		return nil, err
	}
	if cfg.OfflineByChoice { // not even the peers seen before
		return &Session{n: n, warn: warn}, nil
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
	return &Session{n: n, warn: warn}, nil
}

// Find finds the live instances of name.
func (s *Session) Find(ctx context.Context, name string, opts node.FindOptions) (*node.FindResult, error) {
	reply, err := s.FindSigned(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return reply.Result(), nil
}

// FindSigned finds name with each instance's signed record. What a running
// node's API answers is verified here again (node.Client.Find): instances
// whose records fail are dropped, with a warning each.
func (s *Session) FindSigned(ctx context.Context, name string, opts node.FindOptions) (*node.FindReply, error) {
	if s.client == nil {
		return s.n.FindSigned(ctx, name, opts)
	}
	reply, err := s.client.Find(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	for _, d := range reply.Dropped {
		fmt.Fprintf(s.warn, "cellnode: warning: the local node's answer did not verify: %s; dropped\n", d)
	}
	return reply, nil
}

// FindMatching is FindSigned keeping only the instances whose manifest f
// matches (all of them when f is empty).
func (s *Session) FindMatching(ctx context.Context, name string, opts node.FindOptions, f Filter) (*node.FindReply, error) {
	reply, err := s.FindSigned(ctx, name, opts)
	if err != nil || f.Empty() {
		return reply, err
	}
	res, err := f.Apply(ctx, s, reply.Result())
	if err != nil {
		return nil, err
	}
	kept := map[string]bool{}
	for _, in := range res.Instances {
		kept[in.Peer] = true
	}
	out := *reply
	out.Instances = []node.SignedInstance{}
	for _, in := range reply.Instances {
		if kept[in.Peer] {
			out.Instances = append(out.Instances, in)
		}
	}
	return &out, nil
}

// ManifestInfo fetches the manifest of commit c, asking hints first.
func (s *Session) ManifestInfo(ctx context.Context, c cid.Cid, hints []peer.ID) (*node.ManifestInfo, error) {
	if s.client != nil {
		return s.client.ManifestInfo(ctx, c.String(), hints)
	}
	return s.n.ManifestInfo(ctx, c, hints)
}

// Clone clones commit c from peers (hints first) into dir. Only a session
// with a node of its own clones (Local unset).
func (s *Session) Clone(ctx context.Context, c cid.Cid, hints []peer.ID, dir string) error {
	if s.n == nil {
		return errors.New("resolve: clone through a local node's API is not supported; open the session with Local unset")
	}
	return s.n.Clone(ctx, c, hints, dir)
}

// Close stops the session's own node, if it has one.
func (s *Session) Close() {
	if s.n != nil {
		s.n.Close()
	}
}

// CloseAtExit is Close for a process that exits as soon as it returns:
// the session's own node saves its peers and closes its connections but
// stops nothing else (node.Node.CloseAtExit). Close after it does nothing.
func (s *Session) CloseAtExit() {
	if s.n != nil {
		s.n.CloseAtExit()
	}
}
