// Package netbench measures real cellnode processes talking over a real
// kernel network with link delay: a delaynet switch between network
// namespaces, 20 ms one way (40 ms round trip), one cellnode process per
// namespace. Its only code is BenchmarkNetns, in the test files; it runs
// when CELLNODE_NETBENCH=1 and the user is root, and is skipped otherwise.
// docs/performance.md explains what it measures and reports the figures.
package netbench
