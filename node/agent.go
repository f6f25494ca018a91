package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cellnode/cellnode/node/celldns"
)

// AgentConfig configures an Agent. The zero value works: a node with the
// defaults of Config, the shared API socket at DefaultAPIAddr() (mode
// 0666: every user on the machine may read; writes need the agent's user
// or root), no TCP API, DNS on celldns.DefaultAddr, no config directory.
type AgentConfig struct {
	// Node configures the agent's node; its API is always served (the
	// owner's socket, Home/api.sock, mode 0600).
	Node Config
	// API is the path of the shared API socket; "" means DefaultAPIAddr()
	// ($CELLNODE_API when it names a path, else RuntimeDir/api.sock).
	API string
	// APIGroup, when not "", is the group that owns the shared socket,
	// which then has mode 0660: only the group's members (and the agent's
	// user and root) may use it. "" means mode 0666.
	APIGroup string
	// APITCP, when not "", is a loopback address ("127.0.0.1:8640") on
	// which the API is also served, read-only (no write may come over
	// TCP, whose peers cannot be told apart).
	APITCP string
	// DNS is the loopback address of the DNS server; "" means
	// celldns.DefaultAddr. NoDNS turns it off.
	DNS   string
	NoDNS bool
	// DNSMaxTTL caps DNS TTLs; 0 means 5 s (celldns.Config.MaxTTL).
	DNSMaxTTL time.Duration
	// ConfigDir, when not "", is read at start and by Reload: each *.json
	// file in it holds cells to announce and publishers to trust (see
	// ConfigFile).
	ConfigDir string
	// Watch says how watched names are kept fresh.
	Watch WatchConfig
	// MaxCells bounds the cells the agent announces; 0 means 1024.
	MaxCells int
	// MaxWatches bounds the watches blocked at once, on all sockets; 0
	// means 4096. One past it is refused (429).
	MaxWatches int
	// MaxConns bounds the connections of each API listener the agent
	// opens (the shared socket, TCP); 0 means 8192. A connection past it is
	// closed at once.
	MaxConns int
	// WriteTimeout bounds the writing of one response, so that a client
	// that never reads costs a connection for that long; 0 means 10 s.
	WriteTimeout time.Duration
}

// Agent is the machine's cellnode: one node that announces any number of
// cells registered through its API or its config directory, keeps the
// names other services watch fresh, and answers the local API (on a
// shared socket, the owner's socket and optionally loopback TCP) and DNS
// for every service on the machine. It announces nothing of its own. Its
// methods are safe for concurrent use.
type Agent struct {
	n       *Node
	cfg     AgentConfig
	log     *slog.Logger
	hub     *watchHub
	dns     *celldns.Server
	servers []*agentServer
	watches chan struct{} // one token per blocked watch

	opMu      sync.Mutex   // serialises Register, Deregister and Reload
	defs      *Definitions // the config directory as NewAgent read it, until Bootstrap applies it
	startOnce sync.Once
	mu        sync.Mutex
	cells     map[string]*cellEntry
	trust     map[string][]ed25519.PublicKey

	closeOnce sync.Once
	closeErr  error
}

// NewAgent starts an agent: its node (with its local API), the shared API
// socket, the TCP API if asked and DNS, and reads the config directory. It
// starts everything or nothing; a bad config directory is an error
// wrapping ErrConfig. It does not dial anyone: call Bootstrap, which also
// starts the config directory's cells.
func NewAgent(cfg AgentConfig) (_ *Agent, err error) {
	if cfg.MaxCells <= 0 {
		cfg.MaxCells = 1024
	}
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = 4096
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 8192
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.APITCP != "" {
		if err := checkLoopback(cfg.APITCP); err != nil {
			return nil, fmt.Errorf("node: TCP API: %w", err)
		}
	}
	cfg.Node.API = true
	if cfg.Node.RuntimeDir == "" {
		cfg.Node.RuntimeDir = DefaultRuntimeDir()
	}
	if cfg.API == "" {
		cfg.API = DefaultAPIAddr(cfg.Node.RuntimeDir)
	}
	n, err := New(cfg.Node)
	if err != nil {
		return nil, err
	}
	a := &Agent{n: n, cfg: cfg, log: n.log, cells: map[string]*cellEntry{}, trust: map[string][]ed25519.PublicKey{},
		watches: make(chan struct{}, cfg.MaxWatches)}
	a.hub = newWatchHub(n, cfg.Watch, a.pins)
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	defs, err := a.loadConfigDir(cfg.ConfigDir)
	if err != nil {
		return nil, err
	}
	a.routes(n.api.mux)
	srv, err := a.serveUnix(cfg.API, cfg.APIGroup)
	if err != nil {
		return nil, err
	}
	a.servers = append(a.servers, srv)
	if cfg.APITCP != "" {
		if srv, err = a.serveTCP(cfg.APITCP); err != nil {
			return nil, err
		}
		a.servers = append(a.servers, srv)
	}
	if !cfg.NoDNS {
		if a.dns, err = celldns.New(celldns.Config{Addr: cfg.DNS, MaxTTL: cfg.DNSMaxTTL, Logger: a.log, Now: n.now,
			Timeout: 3 * time.Second}, dnsSource{a}); err != nil {
			return nil, fmt.Errorf("node: DNS: %w", err)
		}
	}
	a.defs = defs
	a.log.Info("agent started", "peer", n.ID(), "api", cfg.API, "api_tcp", cfg.APITCP, "dns", a.DNSAddr())
	return a, nil
}

// Node returns the agent's node.
func (a *Agent) Node() *Node { return a.n }

// Bootstrap joins the network (Node.Bootstrap), then starts announcing the
// cells of the config directory read by NewAgent (also when it fails: the
// cells are then visible on this machine until a peer answers). Cells
// announced before the node has a peer would wait for their next
// republish (20 s) to reach the network.
func (a *Agent) Bootstrap(ctx context.Context) error {
	err := a.n.Bootstrap(ctx)
	a.startOnce.Do(func() {
		a.opMu.Lock()
		defer a.opMu.Unlock()
		res, aerr := a.apply(context.Background(), a.defs)
		if a.cfg.ConfigDir != "" {
			a.log.Info("config directory read", "dir", a.cfg.ConfigDir, "result", res.String(), "err", aerr)
		}
		a.defs = nil
	})
	return err
}

// APIAddr returns the path of the shared API socket.
func (a *Agent) APIAddr() string { return a.cfg.API }

// APITCPAddr returns the address of the TCP API, "" when there is none.
func (a *Agent) APITCPAddr() string {
	for _, s := range a.servers {
		if s.tcp {
			return s.ln.Addr().String()
		}
	}
	return ""
}

// DNSAddr returns the address of the DNS server, "" when there is none.
func (a *Agent) DNSAddr() string {
	if a.dns == nil {
		return ""
	}
	return a.dns.Addr()
}

// Close stops the DNS server and the API, withdraws every cell (16 at a
// time, within 5 s) and stops the node. It is safe to call twice.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		if a.dns != nil {
			a.closeErr = a.dns.Close()
		}
		a.hub.close() // blocked watches return, so the servers stop at once
		for _, s := range a.servers {
			s.close()
		}
		// Withdraw the cells 16 at a time (Node.Close withdraws one after
		// another, within 3 s in all: not enough for many cells).
		a.mu.Lock()
		entries := slices.Collect(maps.Values(a.cells))
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for _, e := range entries {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				e.an.Stop(ctx)
			})
		}
		wg.Wait()
		cancel()
		a.closeErr = errors.Join(a.closeErr, a.n.Close())
	})
	return a.closeErr
}

// pins returns the publishers the agent trusts for name (nil: none pinned).
func (a *Agent) pins(name string) []ed25519.PublicKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.trust[name]
}

// Lookup returns the cell's current set under the agent's trust settings,
// from the agent's cache, or after a find when it did not have the name
// (and from then on keeps it fresh while it is asked for).
func (a *Agent) Lookup(ctx context.Context, name string) (*WatchResult, error) {
	return a.hub.current(ctx, name, trust{agent: true})
}

// dnsSource answers the DNS server from the agent's watched sets.
type dnsSource struct{ a *Agent }

func (s dnsSource) Lookup(ctx context.Context, name string) (celldns.Answer, error) {
	res, err := s.a.Lookup(ctx, name)
	if err != nil {
		return celldns.Answer{}, err
	}
	ans := celldns.Answer{Live: len(res.Instances)}
	for _, in := range res.Instances {
		if !in.Reachable {
			continue
		}
		ep, err := ParseEndpoint(in.Best)
		if err != nil || ep.Network != "tcp" {
			continue
		}
		host, port, err := net.SplitHostPort(ep.Address)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil {
			continue
		}
		ans.Targets = append(ans.Targets, celldns.Target{Host: host, Port: uint16(p), Expires: in.Expires})
	}
	return ans, nil
}

// checkLoopback reports whether addr is IP:PORT on a loopback address.
func checkLoopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want IP:PORT, e.g. 127.0.0.1:8640", addr)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("address %s is not a loopback address", addr)
	}
	return nil
}
