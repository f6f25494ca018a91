package node

import (
	"slices"
	"time"

	"github.com/cellnode/cellnode/internal/buildinfo"
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// NetStatus is the part of Status that says where a node stands on the
// network; Status embeds it.
type NetStatus struct {
	Version      string            `json:"version"`            // buildinfo.Info.Short of the node's binary
	Started      time.Time         `json:"started"`            // when the node started
	Modes        map[string]string `json:"dht_modes"`          // by DHT ("wan", "lan"): "server" or "client"
	Tables       map[string]int    `json:"routing_tables"`     // peers in each routing table, by DHT
	Listen       []string          `json:"listen"`             // the addresses the host listens on, as bound
	Announced    []string          `json:"announced"`          // the addresses the node tells peers, with /p2p/<id>
	Observed     []string          `json:"observed,omitempty"` // announced addresses learnt from peers (NAT mappings), not from interfaces
	Reachability string            `json:"reachability"`       // AutoNAT's verdict: public, private or unknown
	Connected    int               `json:"connected_peers"`    // peers with an open connection
	Connections  int               `json:"connections"`        // open connections
	Bootstrap    []BootstrapPeer   `json:"bootstrap"`          // the configured bootstrap peers
	MetricsAddr  string            `json:"metrics_addr,omitempty"`
}

// BootstrapPeer is one configured bootstrap peer as the node sees it now.
type BootstrapPeer struct {
	Peer      string   `json:"peer"`
	Addrs     []string `json:"addrs"`
	Connected bool     `json:"connected"` // an open connection to it
	InTable   bool     `json:"in_table"`  // in a routing table (it serves the DHT)
}

func (n *Node) netStatus() NetStatus {
	s := NetStatus{
		Version: buildinfo.Read().Short(), Started: n.metrics.started,
		Modes: n.dht.Modes(), Tables: n.dht.TableSizes(), Reachability: "unknown",
		Announced: n.Addrs(), Bootstrap: []BootstrapPeer{}, MetricsAddr: n.MetricsAddr(),
	}
	nw := n.host.Network()
	listen := nw.ListenAddresses()
	for _, a := range listen {
		s.Listen = append(s.Listen, a.String())
	}
	// The addresses the interfaces give; the others announced were
	// observed by peers.
	var local []ma.Multiaddr
	if ifaces, err := manet.InterfaceMultiaddrs(); err == nil {
		local, _ = manet.ResolveUnspecifiedAddresses(listen, ifaces)
	}
	for _, a := range n.host.Addrs() {
		if !slices.ContainsFunc(local, a.Equal) && !slices.ContainsFunc(listen, a.Equal) {
			s.Observed = append(s.Observed, a.String())
		}
	}
	if r, ok := n.host.(interface{ Reachability() network.Reachability }); ok {
		s.Reachability = reachability(r.Reachability())
	}
	s.Connected = len(nw.Peers())
	s.Connections = len(nw.Conns())
	inTable := map[string]bool{}
	for _, p := range n.dht.Peers() {
		inTable[p.String()] = true
	}
	for _, b := range n.cfg.Bootstrap {
		bp := BootstrapPeer{Peer: b.ID.String(), Addrs: []string{}, Connected: nw.Connectedness(b.ID) == network.Connected,
			InTable: inTable[b.ID.String()]}
		for _, a := range b.Addrs {
			bp.Addrs = append(bp.Addrs, a.String())
		}
		s.Bootstrap = append(s.Bootstrap, bp)
	}
	return s
}
