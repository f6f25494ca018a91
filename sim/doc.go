// Package sim runs many real cellnodes in one process, on go-libp2p's
// mocknet, so that tests, benchmarks and `cellnode sim` can exercise the
// whole network: real kad-dht, real signed records, real validation, with a
// latency on every link, fixed or drawn from a matrix of regions.
//
// A Scenario says what to build and measure; it is data (LoadScenario reads
// one from JSON, see docs/sim.md): nodes, cells and instances, the latency
// model, churn, a partition, clock skew, adversary nodes. New builds a
// Network from it: every node a DHT server with its own skewed view of the
// network's simulated Clock, routing tables filled as a converged network
// holds them (or joined the way kad-dht joins, Scenario.Setup). The Network
// announces cells with the real announcer (Announce), kills nodes without
// letting them withdraw (Kill), adds nodes (Join), splits and heals the
// network (Split, Heal) and finds cells the way the CLI does (Find).
//
// Run and Measure put numbers on a scenario: find latency percentiles in
// milliseconds and in round trips (RTT) of the simulated links, the time
// to the first instance and to the full set, the success rate, messages
// and bytes per find and per announce by message type, how long a killed
// instance is still returned (staleness), memory and goroutines per node,
// setup time. Measure drives time with the network's clock, so records age
// and expire in simulated time. With Scenario.Baseline (or Compare) it
// measures, find by find on the same network, the two designs of
// DESIGN.md for storing the many instances of one cell name: design 1, the
// set-valued store on the DHT's closest peers (dht.Publish and dht.Find),
// and design 2, stock kad-dht value records plus provider records on the
// name.
//
// Messages are the requests a node sends on the kad-dht and cell protocols
// (one per RPC; responses are not counted again), as seen by a counting
// wrapper around each node's host.
package sim
