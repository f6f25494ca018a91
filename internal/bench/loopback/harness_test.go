package loopback

import (
	"context"
	"encoding/json"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/poll"
)

// The tests in this file check the harness itself: no etcd, no cellnode
// binary, no timing.

func TestPercentile(t *testing.T) {
	ms := func(v ...int) *Sample {
		var s Sample
		for _, x := range v {
			s.Add(time.Duration(x) * time.Millisecond)
		}
		return &s
	}
	for _, c := range []struct {
		name string
		s    *Sample
		p    float64
		want time.Duration
	}{
		{"empty", ms(), 50, 0},
		{"one p50", ms(7), 50, 7 * time.Millisecond},
		{"one p99", ms(7), 99, 7 * time.Millisecond},
		{"p50 of four is the second", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p50 of five is the third", ms(5, 4, 3, 2, 1), 50, 3 * time.Millisecond},
		{"p99 of ten is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of ten is the ninth", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 90, 9 * time.Millisecond},
		{"p100 is the largest", ms(3, 1, 2), 100, 3 * time.Millisecond},
		{"p99 of 200 is the 198th", ms(seq(200)...), 99, 198 * time.Millisecond},
		{"p0 is out of range", ms(1, 2), 0, 0},
		{"p above 100 is out of range", ms(1, 2), 101, 0},
		{"NaN is out of range", ms(1, 2), math.NaN(), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.s.Percentile(c.p); got != c.want {
				t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestPercentileKeepsOrder(t *testing.T) {
	var s Sample
	for _, v := range []int{3, 1, 2} {
		s.Add(time.Duration(v))
	}
	s.Percentile(50)
	if !slices.Equal(s.d, []time.Duration{3, 1, 2}) {
		t.Errorf("Percentile sorted the sample in place: %v", s.d)
	}
}

func TestRatio(t *testing.T) {
	if r := Ratio(3*time.Millisecond, 2*time.Millisecond); r != 1.5 {
		t.Errorf("Ratio(3ms, 2ms) = %v, want 1.5", r)
	}
	if r := Ratio(time.Second, 0); !math.IsNaN(r) {
		t.Errorf("Ratio(1s, 0) = %v, want NaN", r)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	def := Config{}.withDefaults()
	for _, c := range []struct {
		name    string
		getenv  func(string) string
		want    Config
		wantErr string // a substring of the error; "" for none
	}{
		{"defaults", env(), def, ""},
		{"empty is unset", env("LOOPBACK_ROUNDS", ""), def, ""},
		{"rounds", env("LOOPBACK_ROUNDS", "3"), func() Config { c := def; c.Rounds = 3; return c }(), ""},
		{"survive", env("LOOPBACK_SURVIVE", "90s"), func() Config { c := def; c.Survive = 90 * time.Second; return c }(), ""},
		{"every field", env("LOOPBACK_ROUNDS", "2", "LOOPBACK_SIDECARS", "3", "LOOPBACK_CHURN", "4", "LOOPBACK_WARM_FINDS", "5",
			"LOOPBACK_COLD_FINDS", "6", "LOOPBACK_STOPS", "7", "LOOPBACK_BATCH", "8", "LOOPBACK_SURVIVE", "9m", "LOOPBACK_DHT_MODE", "server"),
			Config{Rounds: 2, Sidecars: 3, Churn: 4, WarmFinds: 5, ColdFinds: 6, Stops: 7, Batch: 8, Survive: 9 * time.Minute, DHTMode: "server"}, ""},
		{"bad dht mode", env("LOOPBACK_DHT_MODE", "lan"), Config{}, "LOOPBACK_DHT_MODE"},
		{"not a number", env("LOOPBACK_ROUNDS", "ten"), Config{}, "LOOPBACK_ROUNDS"},
		{"zero", env("LOOPBACK_STOPS", "0"), Config{}, "LOOPBACK_STOPS"},
		{"negative", env("LOOPBACK_BATCH", "-1"), Config{}, "LOOPBACK_BATCH"},
		{"one sidecar", env("LOOPBACK_SIDECARS", "1"), Config{}, "at least 2"},
		{"bad duration", env("LOOPBACK_SURVIVE", "2"), Config{}, "LOOPBACK_SURVIVE"},
		{"negative duration", env("LOOPBACK_SURVIVE", "-1m"), Config{}, "LOOPBACK_SURVIVE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ConfigFromEnv(c.getenv)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, c.wantErr)
			case got != c.want:
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestEnvNamesEveryField(t *testing.T) {
	for _, f := range []string{"Rounds", "Sidecars", "Churn", "WarmFinds", "ColdFinds", "Stops", "Batch", "Survive", "DHTMode"} {
		if Env[f] == "" {
			t.Errorf("Env has no variable for %s", f)
		}
	}
}

func TestDecodeFind(t *testing.T) {
	const answer = `{"name":"bench/svc","instances":[
		{"peer":"12D3KooWA","endpoints":["127.0.0.1:4001"],"reachable":true,"latency_ms":0.1},
		{"peer":"12D3KooWB","endpoints":["127.0.0.1:4002","[::1]:4002"],"reachable":false}],
		"pinned":false,"asked":3}`
	r, err := DecodeFind([]byte(answer))
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "bench/svc" || len(r.Instances) != 2 || r.Asked != 3 || r.Offline {
		t.Errorf("decoded %+v", r)
	}
	for _, c := range []struct {
		ep   string
		want bool
	}{{"127.0.0.1:4001", true}, {"[::1]:4002", true}, {"127.0.0.1:4003", false}, {"", false}} {
		if got := r.Lists(c.ep); got != c.want {
			t.Errorf("Lists(%q) = %v, want %v", c.ep, got, c.want)
		}
	}
	if n := r.Count([]string{"127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:9"}); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}

	empty, err := DecodeFind([]byte(`{"name":"bench/svc","instances":[]}`))
	if err != nil || len(empty.Instances) != 0 {
		t.Errorf("empty answer: %+v, %v", empty, err)
	}
	for name, bad := range map[string]string{
		"not json":          `cellnode: no live instance`,
		"an error":          `{"error":"dht: bad name"}`,
		"null instances":    `{"name":"x/y","instances":null}`,
		"instances not arr": `{"instances":{"peer":"x"}}`,
		"truncated":         `{"instances":[{"peer":"x"`,
	} {
		if _, err := DecodeFind([]byte(bad)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDecodeStatus(t *testing.T) {
	s, err := DecodeStatus([]byte(`{"peer":"12D3KooWA","dht_server":true,"routing_table":5,
		"cells":[{"name":"bench/svc","announcing":true,"publishes":2,"stored_at":4}],"counters":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Server || s.Peers != 5 || len(s.Cells) != 1 || s.Cells[0].StoredAt != 4 || s.Cells[0].Publishes != 2 {
		t.Errorf("decoded %+v", s)
	}
	for _, bad := range []string{`{}`, `[]`, `nope`} {
		if _, err := DecodeStatus([]byte(bad)); err == nil {
			t.Errorf("DecodeStatus(%s): no error", bad)
		}
	}
}

func TestBootstrapAddrs(t *testing.T) {
	out := []string{
		"/ip4/192.0.2.2/tcp/4001/p2p/12D3KooWA",
		"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA",
		"  /ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWA  ",
		"/ip4/127.0.0.1/tcp/4002",
		"/ip6/::1/tcp/4001/p2p/12D3KooWA",
		"/ip6/fd00::2/tcp/4001/p2p/12D3KooWA",
		"cellnode: some message",
	}
	got, err := BootstrapAddrs(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA", "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWA", "/ip6/::1/tcp/4001/p2p/12D3KooWA"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for name, lines := range map[string][]string{
		"nothing":          nil,
		"no loopback":      {"/ip4/192.0.2.2/tcp/4001/p2p/12D3KooWA"},
		"loopback no /p2p": {"/ip4/127.0.0.1/tcp/4001"},
	} {
		if _, err := BootstrapAddrs(lines); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestEtcdctlGet(t *testing.T) {
	for _, c := range []struct {
		name    string
		out     string
		want    []KV
		wantErr bool
	}{
		{"none", "", nil, false},
		{"one", "/cells/bench/svc/0\n127.0.0.1:4001\n", []KV{{"/cells/bench/svc/0", "127.0.0.1:4001"}}, false},
		{"two, no final newline", "/a\n1\n/b\n2", []KV{{"/a", "1"}, {"/b", "2"}}, false},
		{"empty value", "/a\n\n/b\n2\n", []KV{{"/a", ""}, {"/b", "2"}}, false},
		{"odd", "/a\n1\n/b\n", nil, true},
		{"empty key", "\n1\n", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := EtcdctlGet([]byte(c.out))
			if (err != nil) != c.wantErr {
				t.Fatalf("error %v, want error %v", err, c.wantErr)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestTable(t *testing.T) {
	var tb Table
	tb.Title = "title"
	m := tb.Measure("warm_find", "a. warm")
	for _, v := range []int{1, 2, 3, 4} {
		m.Cell.Add(time.Duration(v) * time.Millisecond)
	}
	m.Cell.Fail()
	for _, v := range []int{1, 1} {
		m.Etcd.Add(time.Duration(v) * time.Millisecond)
	}
	if tb.Measure("warm_find", "other") != m {
		t.Fatal("Measure with an existing key added a row")
	}
	only := tb.Measure("solo", "cellnode only")
	only.Cell.Add(250 * time.Millisecond)
	tb.Count("lost", "lost withdrawals", 1, 100)
	tb.Count("rt", "routing table", 5, 0)
	tb.Note("n=%d", 3)

	got := map[string]float64{}
	for _, mt := range tb.Metrics() {
		if strings.ContainsAny(mt.Unit, " \t") {
			t.Errorf("metric unit %q has whitespace", mt.Unit)
		}
		got[mt.Unit] = mt.Value
	}
	want := map[string]float64{
		"warm_find_cellnode_p50_ms": 2, "warm_find_cellnode_p99_ms": 4, "warm_find_cellnode_failed": 1,
		"warm_find_etcd_p50_ms": 1, "warm_find_etcd_p99_ms": 1,
		"warm_find_ratio_p50": 2, "warm_find_ratio_p99": 4,
		"solo_cellnode_p50_ms": 250, "solo_cellnode_p99_ms": 250,
		"lost": 1, "rt": 5,
	}
	if len(got) != len(want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %s = %v, want %v", k, got[k], v)
		}
	}

	var sb strings.Builder
	if err := tb.Write(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	for _, s := range []string{"title\n", "a. warm", "4+1 failed", "2.00 ms", "4.00 ms", "2.0x", "4.0x", "250 ms",
		"lost withdrawals: 1 of 100", "routing table: 5\n", "note: n=3"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	// The cellnode-only row has no etcd figures and no ratio.
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "cellnode only") {
			continue
		}
		dashes := 0
		for _, f := range strings.Fields(l) {
			if f == "-" {
				dashes++
			}
		}
		if dashes != 5 { // etcd n, p50, p99; ratio p50, p99
			t.Errorf("cellnode-only row: %d dashes, want 5: %q", dashes, l)
		}
	}
}

func TestFmtMS(t *testing.T) {
	for v, want := range map[float64]string{0.123: "0.12 ms", 1.5: "1.50 ms", 12.34: "12.3 ms", 630.4: "630 ms", 16000: "16000 ms"} {
		if got := fmtMS(v); got != want {
			t.Errorf("fmtMS(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestProc(t *testing.T) {
	dir := t.TempDir()
	p, err := StartProc("sh", "sh", []string{"-c", `echo "$GREETING"; echo second; printf partial; exit 3`},
		[]string{"GREETING=hello"}, filepath.Join(dir, "sh.log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := p.WaitLine(ctx, func(l string) bool { return strings.HasPrefix(l, "sec") })
	if err != nil || l != "second" {
		t.Fatalf("WaitLine = %q, %v", l, err)
	}
	code, err := p.Wait(ctx)
	if err != nil || code != 3 {
		t.Fatalf("Wait = %d, %v; want 3", code, err)
	}
	if at, ok := p.ExitedAt(); !ok || at.Before(p.Started) {
		t.Errorf("ExitedAt = %v, %v; want a time after the start %v", at, ok, p.Started)
	}
	if got := p.Lines(); !slices.Equal(got, []string{"hello", "second", "partial"}) {
		t.Errorf("Lines = %q", got)
	}
	if _, err := p.WaitLine(ctx, func(l string) bool { return l == "never" }); err == nil {
		t.Error("WaitLine for a line never printed by an exited process: no error")
	}
	if err := p.Signal(os.Interrupt); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
	if log, _ := os.ReadFile(p.LogPath()); !strings.Contains(string(log), "hello\nsecond\n") {
		t.Errorf("log %q", log)
	}
}

func TestProcEnvDropsCellnodeVariables(t *testing.T) {
	t.Setenv("CELLNODE_HOME", "/somewhere")
	p, err := StartProc("sh", "sh", []string{"-c", `echo "home=$CELLNODE_HOME rt=$CELLNODE_RUNTIME_DIR"`},
		[]string{"CELLNODE_RUNTIME_DIR=/rt"}, filepath.Join(t.TempDir(), "sh.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := p.Lines(); !slices.Equal(got, []string{"home= rt=/rt"}) {
		t.Errorf("child saw %q", got)
	}
}

func TestProcStop(t *testing.T) {
	p, err := StartProc("sleep", "sleep", []string{"60"}, nil, filepath.Join(t.TempDir(), "sleep.log"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.ExitedAt(); ok {
		t.Error("ExitedAt reports a running process as exited")
	}
	p.Stop(10 * time.Second)
	if !p.Exited() {
		t.Fatal("Stop returned before the process exited")
	}
	if code, _ := p.Wait(context.Background()); code != -1 {
		t.Errorf("exit code %d, want -1 (ended by a signal)", code)
	}
}

func TestStartProcMissingBinary(t *testing.T) {
	if _, err := StartProc("x", filepath.Join(t.TempDir(), "no-such-binary"), nil, nil, filepath.Join(t.TempDir(), "x.log")); err == nil {
		t.Fatal("no error")
	}
}

// fakeNode serves /v1/find on a unix socket in a home directory, answering
// from a script: the endpoints listed by each successive find (the last
// answer repeats).
type fakeNode struct {
	home string
	mu   sync.Mutex
	seen []string // the name asked for, per request
}

func newFakeNode(t *testing.T, answers ...[]string) *fakeNode {
	t.Helper()
	home, err := os.MkdirTemp("", "lbfake") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	ln, err := net.Listen("unix", filepath.Join(home, apiSocket))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{home: home}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/find", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.URL.Query().Get("name"))
		i := min(len(f.seen), len(answers)) - 1
		f.mu.Unlock()
		if answers[i] == nil {
			http.Error(w, `{"error":"scripted failure"}`, http.StatusBadRequest)
			return
		}
		res := FindResult{Name: r.URL.Query().Get("name"), Instances: []Instance{}}
		for _, ep := range answers[i] {
			res.Instances = append(res.Instances, Instance{Peer: "p-" + ep, Endpoints: []string{ep}, Reachable: true})
		}
		w.Header().Set("X-Cellnode-Age-Ms", "12.500")
		_ = json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"peer":"12D3KooWF","dht_server":false,"routing_table":1,"cells":[{"name":"bench/svc","stored_at":1}]}`))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeNode) sidecar() *Sidecar {
	return &Sidecar{Home: f.home, api: unixClient(filepath.Join(f.home, apiSocket))}
}

func (f *fakeNode) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func TestFindersWaitListed(t *testing.T) {
	const ep = "127.0.0.1:4001"
	ctx := context.Background()
	// Two finders in turn: a failure, then not yet, then listed (from the
	// second finder's second answer).
	a := newFakeNode(t, nil, []string{"127.0.0.1:9"})
	b := newFakeNode(t, []string{}, []string{ep})
	f := NewFinders([]*Sidecar{a.sidecar(), b.sidecar()})
	if _, err := f.WaitListed(ctx, "bench/start", ep, true); err != nil {
		t.Fatal(err)
	}
	if got := append(a.requests(), b.requests()...); !slices.Equal(got, []string{"bench/start", "bench/start", "bench/start", "bench/start"}) {
		t.Errorf("finds asked for %q; want 2 of each finder, in turn", got)
	}

	// Gone: listed twice, then not.
	c := newFakeNode(t, []string{ep}, []string{ep, "127.0.0.1:9"}, []string{"127.0.0.1:9"})
	if _, err := NewFinders([]*Sidecar{c.sidecar()}).WaitListed(ctx, "bench/start", ep, false); err != nil {
		t.Fatal(err)
	}
	if n := len(c.requests()); n != 3 {
		t.Errorf("%d finds, want 3", n)
	}

	// Never listed: the context ends the wait with an error naming the
	// endpoint.
	d := newFakeNode(t, []string{})
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		for len(d.requests()) < 3 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := NewFinders([]*Sidecar{d.sidecar()}).WaitListed(cctx, "bench/start", ep, true)
	if err == nil || !strings.Contains(err.Error(), ep) {
		t.Errorf("error %v, want one naming %s", err, ep)
	}
}

func TestServedBy(t *testing.T) {
	for _, c := range []struct {
		header string
		served Served
		age    time.Duration
	}{
		{"0.000", ServedMiss, 0},
		{"0.001", ServedHit, time.Microsecond},
		{"99.999", ServedHit, 99999 * time.Microsecond},
		{"100.000", ServedStale, 100 * time.Millisecond},
		{"1500.250", ServedStale, 1500250 * time.Microsecond},
		{"", ServedUnknown, 0},
		{"soon", ServedUnknown, 0},
		{"-1.000", ServedUnknown, 0},
		{"NaN", ServedUnknown, 0},
		{"+Inf", ServedUnknown, 0},
	} {
		h := http.Header{}
		if c.header != "" {
			h.Set("X-Cellnode-Age-Ms", c.header)
		}
		served, age := ServedBy(h)
		if served != c.served || age != c.age {
			t.Errorf("X-Cellnode-Age-Ms %q: %v, %v; want %v, %v", c.header, served, age, c.served, c.age)
		}
	}
	if s := ServedStale.String(); s != "stale" {
		t.Errorf("ServedStale is %q", s)
	}
}

func TestSidecarFindAndStatus(t *testing.T) {
	n := newFakeNode(t, []string{"127.0.0.1:4001", "127.0.0.1:4002"}, nil)
	s := n.sidecar()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.Find(ctx, "bench/svc")
	if err != nil {
		t.Fatal(err)
	}
	if r.Count([]string{"127.0.0.1:4001", "127.0.0.1:4002"}) != 2 {
		t.Errorf("find %+v", r)
	}
	if r.Served != ServedHit || r.Age != 12500*time.Microsecond {
		t.Errorf("served %v, age %v; want hit, 12.5ms (from X-Cellnode-Age-Ms)", r.Served, r.Age)
	}
	if _, err := s.Find(ctx, "bench/svc"); err == nil || !strings.Contains(err.Error(), "scripted failure") {
		t.Errorf("a failing find: error %v, want the node's message", err)
	}
	st, err := s.Status(ctx)
	if err != nil || st.Peer != "12D3KooWF" || st.Cells[0].StoredAt != 1 {
		t.Errorf("status %+v, %v", st, err)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A name with spaces and parentheses; utime 250, stime 50 ticks.
	line := "4242 (cell (node) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 50 0 0 20 0 12 0 100 1000000 300 18446744073709551615\n"
	got, err := ParseStatCPU([]byte(line))
	if err != nil || got != 3*time.Second {
		t.Fatalf("ParseStatCPU = %v, %v; want 3s", got, err)
	}
	for _, bad := range []string{"", "4242 cellnode S 1", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 0"} {
		if _, err := ParseStatCPU([]byte(bad)); err == nil {
			t.Errorf("ParseStatCPU(%q): no error", bad)
		}
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	c0, err := CPUTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	poll.T(t, "this process's CPU time to grow", func() bool {
		for i := range 1 << 20 { // busy, so that the time grows
			x += i
		}
		c, err := CPUTime(os.Getpid())
		return err == nil && c > c0
	})
	_ = x
	if r, err := RSS(os.Getpid()); err != nil || r <= 0 {
		t.Fatalf("RSS = %d, %v", r, err)
	}
	if _, err := CPUTime(-1); err == nil {
		t.Fatal("CPUTime(-1): no error")
	}
}

func TestCPUWindowAndRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := CPUWindow{From: t0, To: t0.Add(2 * time.Second), CPUFrom: time.Second, CPUTo: 1500 * time.Millisecond}
	if got := w.Rate(); got != 250 {
		t.Fatalf("Rate = %v, want 250 ms/s", got)
	}
	if got := (CPUWindow{From: t0, To: t0}).Rate(); got != 0 {
		t.Fatalf("empty window's Rate = %v", got)
	}
	r := Rates{4, 1, 3, 2}
	if r.Mean() != 2.5 || r.Quantile(50) != 2 || r.Quantile(100) != 4 || (Rates{}).Mean() != 0 || (Rates{}).Quantile(50) != 0 {
		t.Fatalf("Rates %v: mean %v, p50 %v, max %v", r, r.Mean(), r.Quantile(50), r.Quantile(100))
	}
}

func TestCPUConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	def := CPUConfig{}.withDefaults()
	if def != (CPUConfig{Sidecars: 16, Start: 10 * time.Second, Settle: 5 * time.Second, Steady: 30 * time.Second}) {
		t.Fatalf("defaults %+v", def)
	}
	got, err := CPUConfigFromEnv(env("LOOPBACK_CPU_SIDECARS", "32", "LOOPBACK_CPU_START", "5s", "LOOPBACK_CPU_SETTLE", "1s",
		"LOOPBACK_CPU_STEADY", "1m", "LOOPBACK_CPU_PROFILE", "/tmp/p"))
	if err != nil || got != (CPUConfig{Sidecars: 32, Start: 5 * time.Second, Settle: time.Second, Steady: time.Minute, Profile: "/tmp/p"}) {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, f := range []string{"Sidecars", "Start", "Settle", "Steady", "Profile"} {
		if CPUEnv[f] == "" {
			t.Errorf("CPUEnv has no variable for %s", f)
		}
	}
	for _, bad := range [][2]string{{"LOOPBACK_CPU_SIDECARS", "0"}, {"LOOPBACK_CPU_SIDECARS", "x"},
		{"LOOPBACK_CPU_START", "10"}, {"LOOPBACK_CPU_STEADY", "-1s"}, {"LOOPBACK_CPU_SETTLE", "soon"}} {
		if _, err := CPUConfigFromEnv(env(bad[0], bad[1])); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%s=%s: error %v, want one naming the variable", bad[0], bad[1], err)
		}
	}
}

func TestPairedRatio(t *testing.T) {
	ms := func(v ...int) *Sample {
		var s Sample
		for _, x := range v {
			s.Add(time.Duration(x) * time.Millisecond)
		}
		return &s
	}
	cases := []struct {
		name string
		a, b *Sample
		want float64
	}{
		{"odd", ms(10, 30, 20), ms(10, 10, 10), 2},
		{"even", ms(10, 20, 30, 40), ms(10, 10, 10, 10), 2.5},
		// The machine slowed down between pairs: the ratio of medians
		// (25/25 = 1) hides that A is slower in every pair.
		{"drift", ms(11, 22, 33, 44), ms(10, 20, 30, 40), 1.1},
		{"longer a", ms(20, 20, 99), ms(10, 10), 2},
	}
	for _, c := range cases {
		if got := PairedRatio(c.a, c.b); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		a, b *Sample
	}{{"empty", ms(), ms(1)}, {"zero b", ms(1), ms(0)}} {
		if got := PairedRatio(c.a, c.b); !math.IsNaN(got) {
			t.Errorf("%s: got %v, want NaN", c.name, got)
		}
	}
}

func TestTimeRun(t *testing.T) {
	ctx := context.Background()
	if d, err := TimeRun(ctx, "sh", []string{"-c", "exit 0"}, nil); err != nil || d <= 0 {
		t.Fatalf("sh -c 'exit 0': %v, %v", d, err)
	}
	_, err := TimeRun(ctx, "sh", []string{"-c", "echo broken >&2; exit 3"}, nil)
	if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("a failing command: %v; want its exit status and stderr", err)
	}
	if _, err := TimeRun(ctx, "/nonexistent/cellnode", nil, nil); err == nil {
		t.Fatal("a missing binary: no error")
	}
}
