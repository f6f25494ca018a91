package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/buildinfo"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrMetricsAddr is returned (wrapped) by New when the metrics listener of
// Config.Metrics cannot be opened.
var ErrMetricsAddr = errors.New("node: metrics listener")

// metrics holds a node's Prometheus metrics. Most are read at scrape time
// from the counters the DHT, the store, the object server and the
// announcers already keep (see collector); the few that need an
// observation per event are the histograms below, fed by publishObserved
// and collect. The registry is the node's own, so several nodes in one
// process (tests, the simulator) do not mix their figures; the process's
// default registry (Go runtime, process, and libp2p's own metrics, which
// go-libp2p registers there) is served beside it.
type metrics struct {
	reg     *prometheus.Registry
	started time.Time

	findDur     *prometheus.HistogramVec // set, outcome
	findFirst   prometheus.Histogram
	findAnswers prometheus.Histogram
	findEnds    *prometheus.CounterVec // set, how
	findProbes  *prometheus.CounterVec // started
	pubDur      *prometheus.HistogramVec
	pubStorers  *prometheus.HistogramVec
	refused     *refusals

	srv  *http.Server // the --metrics listener, nil without one
	addr string       // its address
	done chan struct{}
}

// latencyBuckets are in seconds, from a loopback lookup (a millisecond)
// to a publish that waits for a slow storer (15 s).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15}

// peerBuckets count storers or answers, up to twice the replication of 20
// (a record goes to the closest peers of the name's key and, when it is
// delegated, of its publisher's key, in each DHT).
var peerBuckets = []float64{0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 40, 80}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), started: time.Now(), refused: newRefusals()}
	m.findDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cellnode_find_duration_seconds", Buckets: latencyBuckets,
		Help: "Time to gather one set of records from the DHT (a name's, or trusted publishers' sets for a name), by set and outcome (found: records received; empty; no_peers; error).",
	}, []string{"set", "outcome"})
	m.findFirst = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cellnode_find_first_answer_seconds", Buckets: latencyBuckets,
		Help: "Time from the start of a find's gather to the first storer answer that held a record.",
	})
	m.findAnswers = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cellnode_find_answers", Buckets: peerBuckets,
		Help: "Storers that answered one gather.",
	})
	m.findEnds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellnode_find_ends_total",
		Help: "Gathers by how they ended: agreement (storers agreed before the lookup ended), cache (remembered closest peers agreed, no lookup), lookup (ran to the end of the lookup).",
	}, []string{"set", "how"})
	m.findProbes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellnode_find_probes_total",
		Help: "Endpoint dials of finds, by when they started: early (while the gather ran, as a record came in; taken by the ranking), after (by the ranking), early_unused (early, for a record the merge dropped).",
	}, []string{"started"})
	m.pubDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cellnode_publish_duration_seconds", Buckets: latencyBuckets,
		Help: "Time to publish one record, by kind (record, withdrawal) and outcome (stored, not_stored, error).",
	}, []string{"kind", "outcome"})
	m.pubStorers = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cellnode_publish_storers", Buckets: peerBuckets,
		Help: "Remote peers that stored one published record, by kind.",
	}, []string{"kind"})
	m.reg.MustRegister(m.findDur, m.findFirst, m.findAnswers, m.findEnds, m.findProbes, m.pubDur, m.pubStorers,
		m.refused, &collector{n: n})
	return m
}

// handler serves the node's metrics and the process's default registry in
// the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, prometheus.DefaultGatherer},
		promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// listen serves the metrics on addr (host:port, TCP) at /metrics. An
// address already in use is an error that says so.
func (m *metrics) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: %s is already in use by another process (pick another --metrics address): %w", ErrMetricsAddr, addr, err)
		}
		return fmt.Errorf("%w on %s: %w", ErrMetricsAddr, addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "cellnode: metrics at /metrics")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.addr = ln.Addr().String()
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		_ = m.srv.Serve(ln)
	}()
	return nil
}

// MetricsAddr returns the address the metrics listener serves on (with the
// port the system picked for port 0), "" when there is none.
func (n *Node) MetricsAddr() string {
	if n.metrics == nil {
		return ""
	}
	return n.metrics.addr
}

func (m *metrics) close() {
	if m == nil || m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}

// publishObserved is dht.Publish, timed and counted.
func (n *Node) publishObserved(ctx context.Context, r *record.Record) (dht.PublishStats, error) {
	t0 := time.Now()
	st, err := n.dht.Publish(ctx, r)
	kind, outcome := "record", "stored"
	if r.Withdrawn {
		kind = "withdrawal"
	}
	switch {
	case errors.Is(err, dht.ErrNotStored):
		outcome = "not_stored"
	case err != nil:
		outcome = "error"
	}
	n.metrics.pubDur.WithLabelValues(kind, outcome).Observe(time.Since(t0).Seconds())
	n.metrics.pubStorers.WithLabelValues(kind).Observe(float64(st.Stored))
	return st, err
}

// collect is dht.Collect, timed and counted.
func (n *Node) collect(ctx context.Context, name string, pubs []ed25519.PublicKey, seen func(*record.Record)) ([][]byte, dht.FindStats, error) {
	t0 := time.Now()
	raws, verified, st, err := n.dht.CollectSeen(ctx, name, pubs, n.now, seen)
	n.verified.add(verified)
	set, outcome := "name", "found"
	if len(pubs) > 0 {
		set = "publishers"
	}
	switch {
	case errors.Is(err, dht.ErrNoPeers):
		outcome = "no_peers"
	case err != nil:
		outcome = "error"
	case len(raws) == 0:
		outcome = "empty"
	}
	n.metrics.findDur.WithLabelValues(set, outcome).Observe(time.Since(t0).Seconds())
	how := "lookup"
	switch {
	case st.Cached:
		how = "cache"
	case st.Early:
		how = "agreement"
	}
	if n.log.Enabled(ctx, slog.LevelDebug) { // every find passes here: no arguments built for a line not written
		n.log.Debug("find", "name", name, "set", set, "outcome", outcome, "ended_by", how, "took", time.Since(t0),
			"lookup", st.Lookup, "first_answer", st.First, "asked", st.Asked, "answered", st.Responded, "closest", st.Closest)
	}
	if err == nil {
		n.metrics.findEnds.WithLabelValues(set, how).Inc()
		n.metrics.findAnswers.Observe(float64(st.Responded))
		if st.First > 0 {
			n.metrics.findFirst.Observe(st.First.Seconds())
		}
	}
	return raws, st, err
}

// refusals counts what libp2p's resource manager refused, by scope class
// (system, transient, service, protocol, peer, conn, stream) and resource
// (streams, conns, memory). It is an rcmgr.TraceReporter: the resource
// manager calls it synchronously on every reservation, so it returns at
// once for everything but a refusal.
type refusals struct {
	c *prometheus.CounterVec
}

func newRefusals() *refusals {
	return &refusals{c: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cellnode_resource_refused_total",
		Help: "Streams, connections and memory reservations that libp2p's resource manager refused, by scope class and resource.",
	}, []string{"scope", "resource"})}
}

var _ rcmgr.TraceReporter = (*refusals)(nil)

func (r *refusals) ConsumeEvent(evt rcmgr.TraceEvt) {
	var resource string
	switch evt.Type {
	case rcmgr.TraceBlockAddStreamEvt:
		resource = "streams"
	case rcmgr.TraceBlockAddConnEvt:
		resource = "conns"
	case rcmgr.TraceBlockReserveMemoryEvt:
		resource = "memory"
	default:
		return
	}
	r.c.WithLabelValues(scopeClass(evt), resource).Inc()
}

// scopeClass returns the class of the event's scope, which rcmgr exposes
// only through its JSON form.
func scopeClass(evt rcmgr.TraceEvt) string {
	if evt.Scope == nil {
		return "unknown"
	}
	b, err := evt.Scope.MarshalJSON()
	if err != nil {
		return "unknown"
	}
	var sc struct{ Class string }
	if json.Unmarshal(b, &sc) != nil || sc.Class == "" {
		return "unknown"
	}
	return sc.Class
}

func (r *refusals) Describe(ch chan<- *prometheus.Desc) { r.c.Describe(ch) }
func (r *refusals) Collect(ch chan<- prometheus.Metric) { r.c.Collect(ch) }

// collector reads a node's counters and state at scrape time.
type collector struct{ n *Node }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics the collector reports. docs/operations.md lists them all.
var (
	mRecordsStored   = desc("cellnode_records_stored_total", "Records this node's store accepted (PUTs from publishers, and its own records when it serves the DHT).")
	mRecordsServed   = desc("cellnode_records_served_total", "Records this node sent in answers to GETs.")
	mRecordsRejected = desc("cellnode_records_rejected_total", "Records dropped, by stage (store: a PUT this node refused; find: a record a find received and dropped) and reason.", "stage", "reason")
	mRecordsExpired  = desc("cellnode_records_expired_at_serve_total", "Records found expired when about to be served, and dropped.")
	mRecordsHeld     = desc("cellnode_records_held", "Records in this node's store.")
	mRecordBytes     = desc("cellnode_record_bytes_held", "Encoded bytes of the records in this node's store.")
	mRequestsSent    = desc("cellnode_dht_requests_sent_total", "Requests of the instances protocol sent, by op (put, get).", "op")
	mRequestsRecv    = desc("cellnode_dht_requests_received_total", "Requests of the instances protocol received, by op (put, get).", "op")
	mRateLimited     = desc("cellnode_dht_rate_limited_total", "Requests of the instances protocol refused because the peer exceeded its rate.")
	mForgotten       = desc("cellnode_dht_peers_forgotten_total", "Peers dropped from the routing tables because they did not answer.")
	mBytes           = desc("cellnode_dht_bytes_total", "Bytes of instances-protocol messages, by direction (sent, received).", "direction")
	mDHTEvents       = desc("cellnode_dht_events_total", "Other DHT counters, by name (counters added after this list was written).", "event")
	mTable           = desc("cellnode_routing_table_peers", "Peers in each routing table (dht: wan, lan).", "dht")
	mMode            = desc("cellnode_dht_mode", "1 for the mode each DHT is in (dht: wan, lan; mode: server, client).", "dht", "mode")
	mPeers           = desc("cellnode_peers", "Peers this node is connected to.")
	mConns           = desc("cellnode_connections", "Open connections, by direction (inbound, outbound).", "direction")
	mReachability    = desc("cellnode_reachability", "1 for the reachability libp2p's AutoNAT found (public, private, unknown).", "reachability")
	mObjectsServed   = desc("cellnode_git_objects_served_total", "Git objects this node sent to peers fetching manifests and clones.")
	mObjectsFetched  = desc("cellnode_git_objects_fetched_total", "Git objects this node fetched from peers (each one hash-checked).")
	mObjectsOffered  = desc("cellnode_git_objects_offered", "Git objects this node serves (those reachable from the commits it announces).")
	mChecks          = desc("cellnode_health_checks_total", "Health checks of each announced cell's service, by result (ok, fail).", "cell", "result")
	mHealthy         = desc("cellnode_cell_healthy", "1 when the cell's service answered its last health check.", "cell")
	mAnnounced       = desc("cellnode_cell_announced", "1 while the cell is announced (its last record is not a withdrawal).", "cell")
	mStorers         = desc("cellnode_cell_storers", "Remote peers that stored the cell's last record.", "cell")
	mPublishes       = desc("cellnode_cell_publishes_total", "Records published for the cell (withdrawals not counted).", "cell")
	mLastPublish     = desc("cellnode_cell_last_publish_timestamp_seconds", "Unix time of the cell's last publish.", "cell")
	mBuild           = desc("cellnode_build_info", "1, labelled with the binary's module version, VCS revision and Go version.", "version", "revision", "go")
	mStarted         = desc("cellnode_start_timestamp_seconds", "Unix time the node started.")
)

var allDescs = []*prometheus.Desc{mRecordsStored, mRecordsServed, mRecordsRejected, mRecordsExpired, mRecordsHeld,
	mRecordBytes, mRequestsSent, mRequestsRecv, mRateLimited, mForgotten, mBytes, mDHTEvents, mTable, mMode, mPeers,
	mConns, mReachability, mObjectsServed, mObjectsFetched, mObjectsOffered, mChecks, mHealthy, mAnnounced, mStorers,
	mPublishes, mLastPublish, mBuild, mStarted}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	cs := n.dht.Counters()
	take := func(k string) float64 {
		v := cs[k]
		delete(cs, k)
		return float64(v)
	}
	counter(mRecordsStored, take("store_stored"))
	counter(mRecordsServed, take("records_served"))
	counter(mRecordsExpired, take("store_expired_at_serve"))
	counter(mRequestsSent, take("put_sent"), "put")
	counter(mRequestsSent, take("get_sent"), "get")
	counter(mRequestsRecv, take("put_received"), "put")
	counter(mRequestsRecv, take("get_received"), "get")
	counter(mRateLimited, take("rate_limited"))
	counter(mForgotten, take("peers_forgotten"))
	counter(mBytes, take("bytes_sent"), "sent")
	counter(mBytes, take("bytes_received"), "received")
	for k, v := range cs {
		switch {
		case strings.HasPrefix(k, "store_rejected_"):
			counter(mRecordsRejected, float64(v), "store", strings.TrimPrefix(k, "store_rejected_"))
		case strings.HasPrefix(k, "find_rejected_"):
			counter(mRecordsRejected, float64(v), "find", strings.TrimPrefix(k, "find_rejected_"))
		default:
			counter(mDHTEvents, float64(v), k)
		}
	}
	st := n.dht.Store()
	gauge(mRecordsHeld, float64(st.Len()))
	gauge(mRecordBytes, float64(st.Bytes()))
	for space, size := range n.dht.TableSizes() {
		gauge(mTable, float64(size), space)
	}
	for space, mode := range n.dht.Modes() {
		gauge(mMode, 1, space, mode)
	}
	nw := n.host.Network()
	gauge(mPeers, float64(len(nw.Peers())))
	var in, out float64
	for _, c := range nw.Conns() {
		if c.Stat().Direction == network.DirInbound {
			in++
		} else {
			out++
		}
	}
	gauge(mConns, in, "inbound")
	gauge(mConns, out, "outbound")
	if r, ok := n.host.(interface{ Reachability() network.Reachability }); ok {
		gauge(mReachability, 1, reachability(r.Reachability()))
	}
	counter(mObjectsServed, float64(n.objects.Served()))
	counter(mObjectsFetched, float64(n.fetcher.Fetched()))
	gauge(mObjectsOffered, float64(n.objects.Len()))
	n.mu.Lock()
	cells := make([]AnnouncerStatus, 0, len(n.announcers))
	for a := range n.announcers {
		cells = append(cells, a.Status())
	}
	n.mu.Unlock()
	seen := map[string]bool{} // a cell announced twice by one node is reported once
	for _, s := range cells {
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		counter(mChecks, float64(s.Checks-s.CheckFailures), s.Name, "ok")
		counter(mChecks, float64(s.CheckFailures), s.Name, "fail")
		gauge(mHealthy, b2f(s.Healthy), s.Name)
		gauge(mAnnounced, b2f(s.Announcing), s.Name)
		gauge(mStorers, float64(s.StoredAt), s.Name)
		counter(mPublishes, float64(s.Publishes), s.Name)
		if !s.LastPublish.IsZero() {
			gauge(mLastPublish, float64(s.LastPublish.UnixNano())/1e9, s.Name)
		}
	}
	bi := buildinfo.Read()
	gauge(mBuild, 1, bi.Version, bi.Revision, bi.GoVersion)
	gauge(mStarted, float64(n.metrics.started.UnixNano())/1e9)
}

func reachability(r network.Reachability) string {
	switch r {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	}
	return "unknown"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
