// Package node runs one cellnode: a libp2p host (TCP and QUIC) with a
// persistent identity, the cell DHT, announcers that publish instance
// records while their service answers, finds ranked by measured latency, a
// registry of the cells running on this machine, and a local API on a unix
// socket that other cellnode commands on the same machine use. An Agent is
// the node of a whole machine: it announces many cells, keeps watched names
// fresh and serves the API to every user and DNS (package celldns).
//
// A Node owns its goroutines: New starts everything or nothing, Close stops
// and waits, and is safe to call twice. Blocking calls take a context first.
package node
