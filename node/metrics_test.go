package node

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches url (through client) and parses the Prometheus text.
func scrape(t *testing.T, client *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v", url, err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include every pair of labels ("k", "v", ...); a histogram's sample count.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
}

// gitCell makes a git repository with a Cell.json for name and one commit.
func gitCell(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	r, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.FileName), []byte(`{"name":"`+name+`","version":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, _ := r.Worktree()
	if _, err := wt.Add(manifest.FileName); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "Ada", Email: "ada@example.com", When: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, err := wt.Commit("first\n", &git.CommitOptions{Author: sig, Committer: sig}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestMetrics: a node announcing a cell from its repository and a finder
// that finds it and fetches its manifest; each serves /metrics on its
// local API and on its --metrics listener, and the figures say what
// happened: a publish and where it was stored, health checks, a find that
// found records and how it ended, records stored and served, a record
// rejected by reason, the git objects served and fetched, routing tables,
// DHT modes, peers and connections.
func TestMetrics(t *testing.T) {
	c := newCluster(t, nil)
	boot := []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}
	start := func() (*Node, string) {
		home := t.TempDir()
		n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot, API: true,
			Metrics: "127.0.0.1:0", RuntimeDir: t.TempDir(), DHT: dht.Config{Mode: dht.ModeServer}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		return n, home
	}
	for range 3 { // storers beside the bootstrap node
		c.node(nil, "")
	}
	pub, _ := start()
	repo := gitCell(t, "acme/metered")
	commit, err := gitobj.CommitCID(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.ServeManifest(repo, commit); err != nil {
		t.Fatal(err)
	}
	a, err := pub.Announce(Announcement{Name: "acme/metered", Endpoint: service(t).Addr().String(), Manifest: commit,
		CheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publish and a few checks", func() bool { s := a.Status(); return s.Announcing && s.Checks >= 3 })

	finder, finderHome := start()
	if got := findPeers(t, finder, "acme/metered"); len(got) != 1 {
		t.Fatalf("found %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := finder.Manifest(ctx, commit, []peer.ID{pub.ID()}); err != nil {
		t.Fatal(err)
	}
	// A record the store refuses, by reason.
	if _, err := finder.DHT().Store().Put("acme/metered", []byte("not a record")); err == nil {
		t.Fatal("store took garbage")
	}

	tcp := &http.Client{Timeout: 5 * time.Second}
	pm := scrape(t, tcp, "http://"+pub.MetricsAddr()+"/metrics")
	fm := scrape(t, unixClient(filepath.Join(finderHome, APISocket)), "http://cellnode/metrics")
	ftcp := scrape(t, tcp, "http://"+finder.MetricsAddr()+"/metrics")
	if _, ok := value(ftcp, "cellnode_find_duration_seconds"); !ok {
		t.Fatal("the --metrics listener and the local API serve different metrics")
	}

	for _, tc := range []struct {
		fams   map[string]*dto.MetricFamily
		name   string
		labels []string
		min    float64
	}{
		{pm, "cellnode_publish_duration_seconds", []string{"kind", "record", "outcome", "stored"}, 1},
		{pm, "cellnode_publish_storers", []string{"kind", "record"}, 1},
		{pm, "cellnode_cell_storers", []string{"cell", "acme/metered"}, 1},
		{pm, "cellnode_cell_announced", []string{"cell", "acme/metered"}, 1},
		{pm, "cellnode_cell_healthy", []string{"cell", "acme/metered"}, 1},
		{pm, "cellnode_cell_publishes_total", []string{"cell", "acme/metered"}, 1},
		{pm, "cellnode_cell_last_publish_timestamp_seconds", []string{"cell", "acme/metered"}, 1},
		{pm, "cellnode_health_checks_total", []string{"cell", "acme/metered", "result", "ok"}, 3},
		{pm, "cellnode_dht_requests_sent_total", []string{"op", "put"}, 1},
		{pm, "cellnode_git_objects_served_total", nil, 3}, // commit, tree, Cell.json
		{pm, "cellnode_git_objects_offered", nil, 3},
		{pm, "cellnode_routing_table_peers", []string{"dht", "lan"}, 1},
		{pm, "cellnode_dht_mode", []string{"dht", "lan", "mode", "server"}, 1},
		{pm, "cellnode_peers", nil, 1},
		{pm, "cellnode_connections", []string{"direction", "outbound"}, 1},
		{pm, "cellnode_build_info", nil, 1},
		{pm, "cellnode_start_timestamp_seconds", nil, 1},
		{fm, "cellnode_find_duration_seconds", []string{"set", "name", "outcome", "found"}, 1},
		{fm, "cellnode_find_ends_total", []string{"set", "name"}, 1},
		{fm, "cellnode_find_answers", nil, 1},
		{fm, "cellnode_find_first_answer_seconds", nil, 1},
		{fm, "cellnode_dht_requests_sent_total", []string{"op", "get"}, 1},
		{fm, "cellnode_records_rejected_total", []string{"stage", "store", "reason", "malformed"}, 1},
		{fm, "cellnode_git_objects_fetched_total", nil, 3},
		{fm, "go_goroutines", nil, 1}, // the process's default registry is served too
	} {
		v, ok := value(tc.fams, tc.name, tc.labels...)
		if !ok || v < tc.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", tc.name, tc.labels, v, ok, tc.min)
		}
	}
	// The storers' side: records stored and served, summed over the
	// network's nodes (which storers took the record depends on the keys).
	var stored, served float64
	for _, n := range []*Node{c.boot, pub, finder} {
		fams, err := n.metrics.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]*dto.MetricFamily{}
		for _, f := range fams {
			byName[f.GetName()] = f
		}
		s, _ := value(byName, "cellnode_records_stored_total")
		v, _ := value(byName, "cellnode_records_served_total")
		stored, served = stored+s, served+v
	}
	if stored < 1 || served < 1 {
		t.Errorf("records stored %v, served %v over the bootstrap, publishing and finding nodes", stored, served)
	}
}

// TestMetricsAddrInUse: a --metrics address another process holds is a
// clear error, and the node does not start.
func TestMetricsAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	home := t.TempDir()
	_, err = New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: true, Metrics: ln.Addr().String()})
	if !errors.Is(err, ErrMetricsAddr) || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("New with a metrics address in use: %v", err)
	}
	// Nothing was left running: the home can be used at once.
	n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, API: true})
	if err != nil {
		t.Fatalf("home still held after a failed start: %v", err)
	}
	n.Close()
}

// TestResourceRefusals: the reporter counts what a resource manager
// refuses, by scope class and resource, and nothing it grants.
func TestResourceRefusals(t *testing.T) {
	r := newRefusals()
	cfg := rcmgr.InfiniteLimits.ToPartialLimitConfig()
	cfg.System.StreamsInbound = 1
	cfg.System.Streams = 1
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.Build(rcmgr.InfiniteLimits)), rcmgr.WithTraceReporter(r))
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	p := peer.ID("a peer")
	s1, err := rm.OpenStream(p, network.DirInbound)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Done()
	if _, err := rm.OpenStream(p, network.DirInbound); err == nil {
		t.Fatal("a second stream over the system limit was granted")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(r)
	fams, _ := reg.Gather()
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	if v, _ := value(byName, "cellnode_resource_refused_total", "resource", "streams"); v != 1 {
		t.Fatalf("refused streams = %v, want 1 (%v)", v, byName)
	}
	if v, ok := value(byName, "cellnode_resource_refused_total", "resource", "memory"); ok {
		t.Fatalf("refused memory = %v, want none", v)
	}
}

// TestMetricsDocumented: docs/operations.md lists every metric the node
// registers, and no cellnode_ metric the node does not.
func TestMetricsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	m := newMetrics(&Node{})
	descs := make(chan *prometheus.Desc, 100)
	go func() {
		for _, c := range []prometheus.Collector{m.findDur, m.findFirst, m.findAnswers, m.findEnds, m.findProbes, m.pubDur, m.pubStorers, m.refused, &collector{}} {
			c.Describe(descs)
		}
		close(descs)
	}()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	registered := map[string]bool{}
	for d := range descs {
		name := fq.FindStringSubmatch(d.String())[1]
		registered[name] = true
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/operations.md does not list %s", name)
		}
	}
	for _, name := range regexp.MustCompile("`(cellnode_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name[1], "_bucket"), "_count"), "_sum")
		if !registered[base] {
			t.Errorf("docs/operations.md lists %s, which the node does not register", name[1])
		}
	}
	if len(registered) < 30 {
		t.Fatalf("only %d metrics described", len(registered))
	}
}
