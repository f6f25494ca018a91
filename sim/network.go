package sim

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrDead is returned (wrapped) by the methods of Network that act on a
// node that Kill has killed.
var ErrDead = errors.New("sim: node is dead")

// Network is a set of real cellnodes on one mocknet. Node i is addressed by
// its index, 0 to Len()-1; passing any other index panics. Its methods are
// safe for concurrent use; Measure is not meant to run beside other work on
// the same Network, whose messages it would count.
type Network struct {
	sc      Scenario // defaults applied
	mn      mocknet.Mocknet
	members []*member

	setup             time.Duration
	heapPerNode       float64
	goroutinesPerNode float64

	mu        sync.Mutex
	closed    bool
	instances []*Instance
	lastSeq   uint64
	wg        sync.WaitGroup // listeners' accept loops

	closeOnce sync.Once
	closeErr  error
}

// member is one node of the network.
type member struct {
	node  *node.Node
	host  host.Host // the mocknet host, without the meter
	meter *meter
	priv  ed25519.PrivateKey
	dead  atomic.Bool
}

// New builds the network of sc: sc.Nodes mocknet hosts with deterministic
// ed25519 identities (from sc.Seed), a node.Node in DHT server mode on
// each, every pair linked. Then, one node at a time, each node dials
// sc.Connect random earlier nodes and waits for one of them to enter its
// routing table; then every routing table is refreshed. Setup runs with no
// link latency, so that it costs CPU time only; sc.Latency is applied to
// every link at the end. ctx bounds the setup only: the network lives until
// Close. New starts everything or nothing.
func New(ctx context.Context, sc Scenario) (_ *Network, err error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	sc = sc.WithDefaults()
	heap0, gor0 := memUse()
	start := time.Now()
	nw := &Network{sc: sc, mn: mocknet.New()}
	defer func() {
		if err != nil {
			nw.Close()
		}
	}()
	keys := rand.NewChaCha8(seed(sc.Seed, "keys"))
	for i := range sc.Nodes {
		m, err := nw.addNode(i, keys)
		if err != nil {
			return nil, fmt.Errorf("sim: node %d: %w", i, err)
		}
		nw.members = append(nw.members, m)
	}
	if err := nw.mn.LinkAll(); err != nil {
		return nil, fmt.Errorf("sim: link: %w", err)
	}
	if err := nw.connect(ctx); err != nil {
		return nil, err
	}
	for i, m := range nw.members {
		select {
		case <-m.node.DHT().Kad().RefreshRoutingTable():
		case <-ctx.Done():
			return nil, fmt.Errorf("sim: refresh routing table of node %d: %w", i, ctx.Err())
		}
	}
	nw.setLatency(sc.Latency)
	nw.setup = time.Since(start)
	heap1, gor1 := memUse()
	nw.heapPerNode = (float64(heap1) - float64(heap0)) / float64(sc.Nodes)
	nw.goroutinesPerNode = float64(gor1-gor0) / float64(sc.Nodes)
	return nw, nil
}

// seed derives the seed of one stream of random choices from the
// scenario's seed.
func seed(s uint64, purpose string) [32]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], s)
	return sha256.Sum256(append(b[:], purpose...))
}

func memUse() (heap uint64, goroutines int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

func (nw *Network) addNode(i int, keys *rand.ChaCha8) (*member, error) {
	var s [ed25519.SeedSize]byte
	_, _ = keys.Read(s[:])
	priv := ed25519.NewKeyFromSeed(s[:])
	sk, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	// 100::/64 is the discard prefix: mocknet never touches a real network.
	h, err := nw.mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip6/100::%x/tcp/4242", i+1)))
	if err != nil {
		return nil, err
	}
	m := &member{host: h, meter: &meter{}, priv: priv}
	m.node, err = node.New(node.Config{
		Host:         &meteredHost{Host: h, m: m.meter},
		NoRuntimeDir: true,
		DHT: dht.Config{
			Mode:               dht.ModeServer,
			BucketSize:         nw.sc.BucketSize,
			DisableAutoRefresh: true,
		},
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	return m, nil
}

// connect dials, node by node, a few random earlier nodes, and waits until
// the dialling node's routing table holds a peer (identify must run first).
// kad-dht's own tests find that sequential connects fare much better.
func (nw *Network) connect(ctx context.Context) error {
	topo := rand.New(rand.NewChaCha8(seed(nw.sc.Seed, "topology")))
	for i := 1; i < len(nw.members); i++ {
		m := nw.members[i]
		for _, j := range topo.Perm(i)[:min(i, nw.sc.Connect)] {
			if err := m.node.Host().Connect(ctx, peer.AddrInfo{ID: nw.members[j].node.ID()}); err != nil {
				return fmt.Errorf("sim: connect node %d to node %d: %w", i, j, err)
			}
		}
		rt := m.node.DHT().Kad().RoutingTable()
		if err := waitFor(ctx, time.Millisecond, func() bool { return rt.Size() > 0 }); err != nil {
			return fmt.Errorf("sim: node %d: routing table still empty: %w", i, err)
		}
	}
	return nil
}

// setLatency sets the one-way latency of every link, existing or new.
func (nw *Network) setLatency(d time.Duration) {
	opts := mocknet.LinkOptions{Latency: d}
	nw.mn.SetLinkDefaults(opts)
	for _, byPeer := range nw.mn.Links() {
		for _, links := range byPeer {
			for l := range links {
				l.SetOptions(opts)
			}
		}
	}
}

// waitFor polls cond every interval until it holds or ctx ends.
func waitFor(ctx context.Context, interval time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if cond() {
				return nil
			}
		}
	}
}

// Scenario returns the network's scenario, defaults applied.
func (nw *Network) Scenario() Scenario { return nw.sc }

// Len returns the number of nodes, dead ones included.
func (nw *Network) Len() int { return len(nw.members) }

// Node returns node i, dead or alive.
func (nw *Network) Node(i int) *node.Node { return nw.members[i].node }

// Alive reports whether node i has not been killed.
func (nw *Network) Alive(i int) bool { return !nw.members[i].dead.Load() }

// SetupSeconds returns how long New took, in seconds.
func (nw *Network) SetupSeconds() float64 { return nw.setup.Seconds() }

// live returns node i, or an error wrapping ErrDead.
func (nw *Network) live(i int) (*member, error) {
	m := nw.members[i]
	if m.dead.Load() {
		return nil, fmt.Errorf("%w: node %d", ErrDead, i)
	}
	return m, nil
}

// Kill kills node i abruptly, as a crash or a cut cable would: its links
// are cut and its host closed before anything else, so no withdrawal and no
// other message of it reaches anyone; then its node is closed to free its
// goroutines. The records it published stay at their storers until they
// expire. Killing a dead node does nothing.
func (nw *Network) Kill(i int) error {
	m := nw.members[i]
	if !m.dead.CompareAndSwap(false, true) {
		return nil
	}
	id := m.node.ID()
	for _, o := range nw.members {
		if o != m {
			_ = nw.mn.UnlinkPeers(id, o.node.ID())
		}
	}
	err := m.host.Close()
	if cerr := m.node.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sim: kill node %d: %w", i, err)
	}
	return nil
}

// Find runs the full find of the cell name from node i, as `cellnode find`
// does: the DHT find, then a ping of every endpoint found.
func (nw *Network) Find(ctx context.Context, i int, name string) (*node.FindResult, error) {
	m, err := nw.live(i)
	if err != nil {
		return nil, err
	}
	return m.node.Find(ctx, name)
}

// Instance is one cell instance announced on a node by the real announcer
// (node.Announcer), with, unless the caller gave an endpoint, a TCP service
// of its own on the loopback interface that accepts and closes connections:
// it answers the announcer's health checks until StopService.
type Instance struct {
	Node      int     // index of the announcing node
	Name      string  // cell name
	Peer      peer.ID // the announcing node's peer ID
	Endpoint  string  // the announced endpoint
	Announcer *node.Announcer

	ln       net.Listener // nil when the caller gave the endpoint
	stopOnce sync.Once
}

// Announce starts the real announcer for a on node i. If a.Endpoint is
// empty, the instance gets a loopback TCP service of its own. It returns at
// once: WaitPublished waits for the first publish. The announcer stops when
// the node is killed or the network closed.
func (nw *Network) Announce(i int, a node.Announcement) (*Instance, error) {
	m, err := nw.live(i)
	if err != nil {
		return nil, err
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return nil, errors.New("sim: announce: network closed")
	}
	in := &Instance{Node: i, Name: a.Name, Peer: m.node.ID()}
	if a.Endpoint == "" {
		if in.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("sim: announce %s on node %d: service: %w", a.Name, i, err)
		}
		a.Endpoint = in.ln.Addr().String()
		nw.wg.Go(func() { serve(in.ln) })
	}
	in.Endpoint = a.Endpoint
	if in.Announcer, err = m.node.Announce(a); err != nil {
		in.StopService()
		return nil, fmt.Errorf("sim: announce %s on node %d: %w", a.Name, i, err)
	}
	nw.instances = append(nw.instances, in)
	return in, nil
}

// serve accepts connections on ln and closes them, until ln is closed.
func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// StopService stops the instance's own service: from the announcer's next
// health check on, it fails, and the announcer withdraws the instance. It
// does nothing for an instance whose endpoint the caller gave, and is safe
// to call more than once.
func (in *Instance) StopService() {
	in.stopOnce.Do(func() {
		if in.ln != nil {
			in.ln.Close()
		}
	})
}

// WaitPublished waits until the announcer has published a record without
// error, or ctx ends.
func (in *Instance) WaitPublished(ctx context.Context) error {
	err := waitFor(ctx, 5*time.Millisecond, func() bool {
		s := in.Announcer.Status()
		return s.Announcing && s.Publishes > 0 && s.LastError == ""
	})
	if err != nil {
		s := in.Announcer.Status()
		return fmt.Errorf("sim: %s on node %d not published (%d publishes, last error %q): %w",
			in.Name, in.Node, s.Publishes, s.LastError, err)
	}
	return nil
}

// Close stops every service, closes every host (so nothing leaves any node
// from then on: no withdrawal is published), then closes every node. It is
// safe to call more than once.
func (nw *Network) Close() error {
	nw.closeOnce.Do(func() {
		nw.mu.Lock()
		nw.closed = true
		instances := nw.instances
		nw.mu.Unlock()
		for _, in := range instances {
			in.StopService()
		}
		var errs []error
		if err := nw.mn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("sim: close mocknet: %w", err))
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, m := range nw.members {
			wg.Go(func() {
				if err := m.node.Close(); err != nil && !m.dead.Load() {
					mu.Lock()
					errs = append(errs, fmt.Errorf("sim: close node %d: %w", i, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		nw.wg.Wait()
		nw.closeErr = errors.Join(errs...)
	})
	return nw.closeErr
}

// nextSeq returns a record sequence number above every one handed out
// before by this network: the time in microseconds, or one more than the
// last.
func (nw *Network) nextSeq(now time.Time) uint64 {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.lastSeq = max(nw.lastSeq+1, uint64(now.UnixMicro()))
	return nw.lastSeq
}

// tally sums the meters of every node.
func (nw *Network) tally() tally {
	var t tally
	for _, m := range nw.members {
		t = t.add(m.meter.snapshot())
	}
	return t
}
