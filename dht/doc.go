// Package dht is the cell namespace on go-libp2p-kad-dht: the set-valued
// record store that DHT servers keep for each cell name, the stream protocol
// that writes and reads those sets, and the publish and find operations
// built on kad-dht's own closest-peer lookup. The records themselves, and
// their checks, are package dht/record.
//
// A cell name ("acme/exchange") maps to the DHT key "/cell/acme/exchange".
// Publishing an instance finds the peers closest to that key and stores the
// signed record at each of them; finding a cell runs the same lookup and
// merges what those peers hold. Every record is verified by the storer before
// it is stored and again before it is served, and by the finder on receipt:
// signature, canonical encoding, size, name and the 60 s lifetime. A record
// that fails any check is dropped and counted, never returned.
//
// See docs/records.md for the byte format and docs/architecture.md for how a
// record flows through the network.
package dht
