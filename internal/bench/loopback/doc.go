// Package loopback benchmarks cellnode against etcd with real processes on
// loopback, side by side in one run.
//
// Its one job is BenchmarkLoopback (loopback_test.go): it builds the
// cellnode binary from this tree, starts one `cellnode bootstrap` and
// sidecars (`cellnode run`, each with its own --home and
// CELLNODE_RUNTIME_DIR, announcing a tiny TCP listener), starts a
// single-member etcd (Debian's etcd-server, installed by ../etcd.sh when
// missing) on loopback ports in a temporary data directory, and alternates
// cellnode and etcd rounds so that noise on the machine hits both. It
// reports p50/p99 and the cellnode/etcd ratio of each measure with
// b.ReportMetric and as a table on stdout. docs/performance.md has the
// command and the figures.
//
// The rest of the package is the harness: child processes (Proc), the
// cellnode network (Cluster, Sidecar), etcd (Etcd), percentiles (Sample)
// and the table (Table). None of it is safe for concurrent use unless its
// doc says so.
package loopback
