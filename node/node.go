package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultListen are the addresses a node listens on when Config.Listen is
// empty: TCP and QUIC on every interface, on ports the system picks.
var DefaultListen = []string{
	"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1",
	"/ip6/::/tcp/0", "/ip6/::/udp/0/quic-v1",
}

// Config configures a Node. The zero value works: a node with its state in
// DefaultHome, listening on DefaultListen, in DHT auto mode, with no
// bootstrap peers and no local API.
type Config struct {
	// Home is the state directory (identity, sequence, lock, API socket,
	// peers seen before); "" means DefaultHome(), except for an Ephemeral
	// node or one given a Host, for which "" means no state on disk at all.
	// Created with mode 0700.
	Home string
	// Ephemeral gives the node a fresh random identity and takes no lock on
	// Home, for one-shot commands such as find; it still reads and updates
	// the peers seen before. It refreshes no routing table, neither
	// kad-dht's periodic refresh nor Bootstrap's: a one-shot command's
	// lookups fill its table with the peers it needs (and the peers saved
	// at Close), and a refresh's dozens of queries and new connections
	// would only compete with them.
	Ephemeral bool
	// Listen are libp2p multiaddrs to listen on; nil means DefaultListen.
	Listen []string
	// Bootstrap are the peers Bootstrap dials; nil means none.
	Bootstrap []peer.AddrInfo
	// API serves the local API on Home/api.sock.
	API bool
	// Metrics, when not "", is a TCP address (host:port) on which the
	// node serves its Prometheus metrics at /metrics, beside the local
	// API's /metrics; New fails, wrapping ErrMetricsAddr, when it cannot
	// listen there.
	Metrics string
	// RuntimeDir is the machine-wide directory where running announcers
	// register their cells; "" means DefaultRuntimeDir().
	RuntimeDir string
	// NoRuntimeDir neither registers announced cells on this machine nor
	// reads the cells registered there (the simulator's nodes share a
	// machine, not a network position).
	NoRuntimeDir bool
	// DHT configures the DHT; the node sets its BootstrapPeers and Logger.
	DHT dht.Config
	// Host, when not nil, is used instead of a new libp2p host (the
	// simulator passes mocknet hosts); Listen is then ignored. Close does
	// not close it.
	Host host.Host
	// Logger receives the node's logs; nil means discard.
	Logger *slog.Logger
	// SameMachine says that every peer runs on this machine (the
	// simulator's nodes): finds then probe loopback endpoints in any
	// record. Off, they probe them only for peers shown to run here (see
	// FindWith). unix: endpoints are probed only for this machine's cells
	// either way.
	SameMachine bool

	// Now is the node's clock for signing and checking records (the
	// simulator runs nodes on a shared, skewed or fast-forwarded clock);
	// nil means time.Now.
	Now func() time.Time
}

// Node is one running cellnode. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	host  host.Host
	ownH  bool
	priv  ed25519.PrivateKey
	dht   *dht.Node
	seq   *Sequencer
	log   *slog.Logger
	lock  *os.File
	peers *bootstrap.Store
	api   *apiServer
	now   func() time.Time

	metrics *metrics // Prometheus metrics (metrics.go)

	recent   recentRecords   // records returned by recent finds
	verified verifiedRecords // records finds verified, by their bytes
	objects  *gitobj.Server  // serves the git objects of announced manifests
	fetcher  *gitobj.Fetcher // fetches manifests and clones, with a cache
	done     chan struct{}   // closed by Close
	wg       sync.WaitGroup  // the node's own goroutines

	probes prober // the endpoint probes of finds

	// publishHook, when not nil, replaces the DHT's Publish for the
	// announcers (tests: slow or failing publishes).
	publishHook func(context.Context, *record.Record) (dht.PublishStats, error)

	rejoining sync.Mutex // held by rejoin

	mu         sync.Mutex
	announcers map[*Announcer]struct{}
	closed     bool  // Close has begun: Announce refuses
	offline    error // the last Bootstrap's ErrOffline, nil once one succeeded

	closeOnce sync.Once
	closeErr  error
}

// New starts a node: identity, host, DHT and, if asked, the local API. It
// starts everything or nothing. It does not dial anyone: call Bootstrap.
func New(cfg Config) (_ *Node, err error) {
	inMemory := cfg.Home == "" && (cfg.Ephemeral || cfg.Host != nil)
	if cfg.Home == "" && !inMemory {
		cfg.Home = DefaultHome()
	}
	if inMemory && cfg.API {
		return nil, errors.New("node: the local API needs a home directory")
	}
	if cfg.RuntimeDir == "" {
		cfg.RuntimeDir = DefaultRuntimeDir()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: log, now: cfg.Now, announcers: map[*Announcer]struct{}{}, done: make(chan struct{})}
	n.metrics = newMetrics(n)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if !inMemory {
		if err := ensureHome(cfg.Home); err != nil {
			return nil, err
		}
		n.peers = bootstrap.NewStore(filepath.Join(cfg.Home, PeersFile))
	}
	var sk crypto.PrivKey
	if cfg.Ephemeral || cfg.Host != nil {
		if cfg.Host != nil {
			sk = cfg.Host.Peerstore().PrivKey(cfg.Host.ID())
		}
		if sk == nil {
			if sk, _, err = crypto.GenerateEd25519Key(nil); err != nil {
				return nil, err
			}
		}
		n.seq, _ = NewSequencer("", cfg.Now)
	} else {
		if n.lock, err = lockHome(cfg.Home); err != nil {
			return nil, err
		}
		if sk, err = LoadIdentity(cfg.Home); err != nil {
			return nil, err
		}
		if n.seq, err = NewSequencer(filepath.Join(cfg.Home, SeqFile), cfg.Now); err != nil {
			return nil, err
		}
	}
	raw, err := sk.Raw()
	if err != nil || sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("node: identity must be an ed25519 key")
	}
	n.priv = ed25519.PrivateKey(raw)

	var gone *goneDials
	if cfg.Host != nil {
		n.host = cfg.Host
	} else {
		if n.host, gone, err = newHost(sk, cfg.Listen, n.metrics.refused, hostMetrics(cfg)); err != nil {
			return nil, err
		}
		n.ownH = true
	}
	dcfg := cfg.DHT
	if gone != nil && dcfg.PeerGone == nil {
		dcfg.PeerGone = gone.PeerGone
	}
	// A node that lives drops the peers that leave from its routing
	// tables (dht/departed.go); a one-shot node ends first, and its own
	// exit closes every connection it has.
	if gone != nil && dcfg.PeerLeft == nil && !cfg.Ephemeral {
		dcfg.PeerLeft = gone.PeerLeft
	}
	dcfg.BootstrapPeers = cfg.Bootstrap
	dcfg.Logger = log
	if cfg.Ephemeral {
		dcfg.DisableAutoRefresh = true
	}
	if dcfg.Store.Now == nil {
		dcfg.Store.Now = cfg.Now
	}
	if n.dht, err = dht.New(n.host, dcfg); err != nil {
		return nil, err
	}
	n.objects = gitobj.NewServer(n.host, log)
	cacheDir := ""
	if !inMemory {
		cacheDir = filepath.Join(cfg.Home, ObjectCache)
	}
	if n.fetcher, err = gitobj.NewFetcher(n.host, n.dht.Router(), cacheDir, log); err != nil {
		return nil, err
	}
	// The metrics listener first: the API's status reports its address.
	if cfg.Metrics != "" {
		if err := n.metrics.listen(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	if cfg.API {
		if n.api, err = startAPI(n, filepath.Join(cfg.Home, APISocket)); err != nil {
			return nil, err
		}
	}
	if n.peers != nil {
		n.wg.Add(1)
		go n.rememberPeersLoop()
	}
	log.Info("node started", "peer", n.host.ID(), "addrs", n.host.Addrs(), "home", cfg.Home)
	return n, nil
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host returns the node's libp2p host.
func (n *Node) Host() host.Host { return n.host }

// DHT returns the node's cell DHT.
func (n *Node) DHT() *dht.Node { return n.dht }

// Addrs returns the node's full multiaddrs, each ending in /p2p/<id>.
func (n *Node) Addrs() []string {
	var out []string
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+"/p2p/"+n.host.ID().String())
	}
	return out
}

// ErrOffline is returned (wrapped) by Bootstrap when no bootstrap peer and
// no peer seen before could be reached.
var ErrOffline = errors.New("node: offline: no bootstrap peer or known peer reachable")

// Bootstrap connects to the configured bootstrap peers and the peers seen
// before, all at once, and returns as soon as a DHT routing table holds a
// peer: a lookup can start from one server, and the routing-table refresh
// that fills the table goes on in the background (the peers are saved when
// it ends, so that a node that crashes soon after can rejoin without the
// bootstrap peers); an Ephemeral node runs no refresh. With no bootstrap
// peers configured and none seen before it returns ErrOffline at once.
func (n *Node) Bootstrap(ctx context.Context) error {
	err := n.bootstrap(ctx)
	if err == nil || errors.Is(err, ErrOffline) {
		n.mu.Lock()
		n.offline = err
		n.mu.Unlock()
	}
	return err
}

// offlineReason says why the network is out of reach: the last Bootstrap's
// error (which names each peer dialled and how it failed), else cause's.
func (n *Node) offlineReason(cause error) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.offline != nil {
		return n.offline.Error()
	}
	if cause != nil {
		return cause.Error()
	}
	return ""
}

func (n *Node) bootstrap(ctx context.Context) error {
	var known []peer.AddrInfo
	if n.peers != nil {
		var err error
		if known, err = n.peers.Load(); err != nil {
			n.log.Warn("ignoring peers seen before", "err", err)
		}
	}
	if len(n.cfg.Bootstrap) == 0 && len(known) == 0 {
		return fmt.Errorf("%w (no bootstrap peers configured)", ErrOffline)
	}
	start := time.Now()
	connected, err := bootstrap.Connect(ctx, n.host, n.cfg.Bootstrap, known, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrOffline, err)
	}
	// A first estimate of the network's round trip for the DHT's dial
	// budget, before any request has measured one: a dial (identify not
	// waited for) takes one round trip over QUIC, two or three over TCP.
	for _, p := range connected {
		if n.host.Peerstore().LatencyEWMA(p) == 0 {
			n.host.Peerstore().RecordLatency(p, time.Since(start))
		}
	}
	n.log.Info("bootstrapped", "peers", len(connected))
	// Put the peers dialled in the routing tables now, not after identify
	// and kad-dht's check of each (two round trips; see dht.Node.Seed):
	// the first lookup or publish goes out right after the handshake.
	n.dht.Seed(connected)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for len(n.dht.Peers()) == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: connected to %d peers but none serves the cell DHT", ErrOffline, len(connected))
		case <-n.done:
			return ErrClosed
		case <-t.C:
		}
	}
	if n.cfg.Ephemeral {
		return nil // no refresh: see Config.Ephemeral
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		go func() {
			select {
			case <-n.done:
				cancel()
			case <-rctx.Done():
			}
		}()
		n.rememberPeers()
		if err := n.dht.Refresh(rctx); err != nil && rctx.Err() == nil {
			n.log.Debug("routing-table refresh", "err", err)
		}
		n.rememberPeers()
	}()
	return nil
}

// ReserveSequence reserves record sequence numbers in the background
// (Sequencer.Reserve): a node about to announce calls it before Bootstrap,
// so that the sequence file's synced write overlaps the connection to the
// network instead of delaying the first publish.
func (n *Node) ReserveSequence() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		if err := n.seq.Reserve(); err != nil {
			n.log.Debug("reserving sequence numbers ahead", "err", err) // Next reports it, at the first publish
		}
	}()
}

// rejoin bootstraps again when no routing table holds a peer (a publish
// is about to start): a node whose bootstrap failed, or whose peers all
// went away, is back on the network at its next publish, instead of when
// kad-dht's own retry of the bootstrap peers comes round (every 2 minutes).
// One rejoin runs at a time; the others skip it. A node offline by choice
// (no bootstrap peers, none seen before) costs nothing here.
func (n *Node) rejoin(ctx context.Context) {
	if len(n.dht.Peers()) > 0 || !n.rejoining.TryLock() {
		return
	}
	defer n.rejoining.Unlock()
	if err := n.Bootstrap(ctx); err != nil && !errors.Is(err, ErrOffline) {
		n.log.Debug("rejoin", "err", err)
	} else if err == nil {
		n.log.Info("rejoined the network", "peers", len(n.dht.Peers()))
	}
}

// rememberPeersLoop saves the routing table's peers every 10 minutes, so a
// node that crashes can still rejoin through them.
func (n *Node) rememberPeersLoop() {
	defer n.wg.Done()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			n.rememberPeers()
		}
	}
}

// rememberPeers saves the routing table's peers with their addresses.
func (n *Node) rememberPeers() { n.savePeers(n.tablePeers()) }

// tablePeers returns the routing table's peers with their addresses, for
// savePeers; nil when there is no peer store.
func (n *Node) tablePeers() []peer.AddrInfo {
	if n.peers == nil {
		return nil
	}
	var infos []peer.AddrInfo
	for _, p := range n.dht.Peers() {
		if addrs := n.host.Peerstore().Addrs(p); len(addrs) > 0 {
			infos = append(infos, peer.AddrInfo{ID: p, Addrs: addrs})
		}
	}
	return infos
}

// savePeers writes infos to the peer store (a synced write); none is no
// write.
func (n *Node) savePeers(infos []peer.AddrInfo) {
	if len(infos) == 0 {
		return
	}
	if err := n.peers.Save(infos); err != nil {
		n.log.Warn("could not save peers", "err", err)
	}
}

// Close withdraws every announced cell (Leave, each withdrawal with a
// budget of its own, WithdrawTimeout, in parallel), then stops every
// goroutine of the node, announcers included, and waits for them; then it
// stops the API, the DHT and the host, and releases the home lock. Announce
// returns ErrClosed from the moment Close begins. It is safe to call more
// than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), WithdrawTimeout+time.Second)
		if err := n.Leave(ctx); err != nil {
			n.log.Warn("leaving", "err", err)
		}
		cancel()
		close(n.done)
		n.wg.Wait() // the announcers too, however long their withdrawals' budgets run
		if n.api != nil {
			n.api.close()
		}
		n.metrics.close()
		if n.objects != nil {
			n.closeErr = errors.Join(n.closeErr, n.objects.Close())
		}
		// The peers are read before the DHT and the host stop, and written
		// while they do: the synced write is most of a one-shot node's
		// Close.
		saved := make(chan struct{})
		if n.dht != nil {
			infos := n.tablePeers()
			go func() { defer close(saved); n.savePeers(infos) }()
			n.closeErr = errors.Join(n.closeErr, n.dht.Close())
		} else {
			close(saved)
		}
		if n.ownH && n.host != nil {
			n.closeErr = errors.Join(n.closeErr, n.host.Close())
		}
		<-saved
		if n.lock != nil {
			n.lock.Close()
		}
	})
	return n.closeErr
}

// CloseAtExit is Close for a process that exits as soon as it returns (a
// one-shot command, after printing its answer): an ephemeral node with
// its own host and no announced cell saves the peers of its routing table
// and closes its connections and listeners (its swarm), all at once, and
// stops nothing else: the DHT's and the rest of the host's goroutines end
// with the process, which is about half of Close's time. The connections are
// closed so that each peer learns at once that this node is gone: the
// system closes the TCP ones at exit, but a QUIC peer would otherwise
// keep its side until the idle timeout. Any other node (a local API, a
// metrics listener, a host of the caller's), or one with cells announced,
// is closed in full (Close). The node must not be used
// after; Close after it does nothing.
func (n *Node) CloseAtExit() error {
	n.mu.Lock()
	full := !n.cfg.Ephemeral || !n.ownH || n.api != nil || n.cfg.Metrics != "" || len(n.announcers) > 0
	n.mu.Unlock()
	if full {
		return n.Close()
	}
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		close(n.done)
		n.wg.Wait() // only rememberPeersLoop: no announcer, no refresh (Ephemeral)
		infos := n.tablePeers()
		saved := make(chan struct{})
		go func() { defer close(saved); n.savePeers(infos) }()
		// The swarm, not each connection: closing it closes every
		// connection and listener in parallel and refuses new ones, where
		// kad-dht, still running, would dial its bootstrap peers again as
		// soon as its routing table emptied.
		n.closeErr = n.host.Network().Close()
		<-saved
	})
	return n.closeErr
}

// PublicKey returns the node's ed25519 public key, which its peer ID
// encodes and its records carry.
func (n *Node) PublicKey() ed25519.PublicKey { return n.priv.Public().(ed25519.PublicKey) }
