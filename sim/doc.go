// Package sim runs many real cellnodes in one process, on go-libp2p's
// mocknet, so that tests and benchmarks can exercise the whole network: real
// kad-dht, real signed records, real validation, with a one-way latency on
// every link.
//
// A Scenario says what to build and measure; it is data (LoadScenario reads
// one from JSON). New builds a Network from it: every node a DHT server,
// connected to a few earlier nodes one at a time, routing tables refreshed.
// The Network announces cells with the real announcer (Announce), kills
// nodes without letting them withdraw (Kill) and finds cells the way the
// CLI does (Find).
//
// Measure, Run and Compare put numbers on the two designs of DESIGN.md for
// storing the many instances of one cell name: design 1, the set-valued
// store on the DHT's closest peers (dht.Publish and dht.Find), and design 2,
// one stock kad-dht value record per instance plus provider records on the
// name. A Report gives find and announce latency percentiles in milliseconds
// and in round trips of the simulated link, the success rate, the messages
// sent per operation and the cost of each node in heap and goroutines.
//
// Messages are the requests a node sends on the kad-dht and cell protocols
// (one per RPC; responses are not counted again), as seen by a counting
// wrapper around each node's host.
package sim
