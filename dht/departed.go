package dht

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// Departed peers. kad-dht keeps a peer in its routing table after the
// peer's connections close, and drops it only when a query of its own to
// the peer fails. A node that stopped (a sidecar SIGTERMed, a one-shot
// DHT server, a host replaced) so stayed in the tables of every node that
// had not queried it since, and each of them named it to every lookup that
// asked: a cold find from a fresh home, on loopback after 30 sidecars had
// come and gone, took 5.0× `etcdctl get --prefix` against 2.9× before
// they had (docs/performance.md, session 17), dialling peers that were
// gone. So a node whose Config.PeerLeft is set watches its tables' peers:
// when the last connection to one closes, it waits leftDelay (a redial, or
// a connection that replaced it, ends the matter), then asks PeerLeft
// whether the peer's process at that connection's address is gone (its
// TCP ports there refuse a connect), and if it is, drops the peer from
// every table at once. A peer that is alive (a connection trimmed by the
// connection manager, a network hiccup), or that cannot be told (a machine
// that is down answers nothing; a peer with no TCP address), stays, and
// kad-dht's own rule applies to it as before.
//
// The checks cost a TCP connect to each address of the peer on that IP.
// At most leftRate start a second node-wide (burst leftBurst), one at a
// time per peer, and only for peers in a table: a peer cannot make a node
// send connects elsewhere than to the addresses it would dial the peer at
// anyway, nor more often than it connects and disconnects itself.

const (
	leftDelay  = 100 * time.Millisecond
	leftBudget = time.Second // for a check's connects
	leftRate   = 20
	leftBurst  = 100
)

// departures is the state of the checks above.
type departures struct {
	mu       sync.Mutex
	closed   bool // Close has begun: no more checks
	checking map[peer.ID]bool
	lim      *rate.Limiter
	notifiee network.Notifiee
}

// watchDepartures starts the checks (Config.PeerLeft is set).
func (d *Node) watchDepartures() {
	d.left = &departures{checking: map[peer.ID]bool{}, lim: rate.NewLimiter(leftRate, leftBurst)}
	d.left.notifiee = &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) { d.disconnected(c) }}
	d.host.Network().Notify(d.left.notifiee)
}

// stopDepartures stops new checks; Close waits for those running (d.wg).
func (d *Node) stopDepartures() {
	if d.left == nil {
		return
	}
	d.host.Network().StopNotify(d.left.notifiee)
	d.left.mu.Lock()
	d.left.closed = true
	d.left.mu.Unlock()
}

// inTables reports whether p is in one of the node's routing tables.
func (d *Node) inTables(p peer.ID) bool {
	for _, sp := range d.spaces {
		if sp.kad.RoutingTable().Find(p) != "" {
			return true
		}
	}
	return false
}

// disconnected is the network's notice that connection c closed. It must
// not block (the swarm calls it in line).
func (d *Node) disconnected(c network.Conn) {
	p := c.RemotePeer()
	if !d.inTables(p) {
		return
	}
	l := d.left
	l.mu.Lock()
	if l.closed || l.checking[p] {
		l.mu.Unlock()
		return
	}
	if !l.lim.Allow() {
		l.mu.Unlock()
		d.count.add("departure_checks_limited", 1)
		return
	}
	l.checking[p] = true
	d.wg.Add(1)
	l.mu.Unlock()
	from := c.RemoteMultiaddr()
	go func() {
		defer d.wg.Done()
		defer func() {
			l.mu.Lock()
			delete(l.checking, p)
			l.mu.Unlock()
		}()
		t := time.NewTimer(leftDelay)
		defer t.Stop()
		select {
		case <-d.done:
			return
		case <-t.C:
		}
		if d.host.Network().Connectedness(p) == network.Connected {
			return
		}
		d.count.add("departure_checks", 1)
		ctx, cancel := d.background(context.Background(), leftBudget) // Close ends the check
		defer cancel()
		if !d.cfg.PeerLeft(ctx, p, from) {
			return
		}
		dropped := false
		for _, sp := range d.spaces {
			if sp.kad.RoutingTable().Find(p) != "" {
				sp.kad.RoutingTable().RemovePeer(p)
				dropped = true
			}
		}
		if dropped {
			d.count.add("peers_departed", 1)
			d.log.Debug("peer left: dropped from the routing tables", "peer", p, "addr", from)
		}
	}()
}
