package loopback

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// moduleDir is the module's root, seen from this package's directory
// (where go test runs it).
const moduleDir = "../../.."

// The cells the benchmark announces.
const (
	svcCell   = "bench/svc"   // announced by the long-lived sidecars; what a and b find
	churnCell = "bench/churn" // announced by the sidecars kept to be killed
	startCell = "bench/start" // announced by the sidecars c and d start and e stops
	stopCell  = "bench/stop"  // announced by the sidecars f stops
)

// etcdPrefix is where the etcd side keeps a cell's instances: one key per
// instance, the value its endpoint, under a lease.
func etcdPrefix(cell string) string { return "/cells/" + cell + "/" }

// BenchmarkLoopback runs cellnode and etcd side by side on loopback, with
// real processes. Run it with
//
//	go test -run '^$' -bench Loopback -benchtime 1x ./internal/bench/loopback
//
// (sizes in the LOOPBACK_ variables, see Config and Env; -bench
// Loopback/latency runs one sub-benchmark). Each
// sub-benchmark starts its own network and etcd and runs once whatever
// b.N is:
//
//   - latency: a. warm find through a running node's local API against an
//     etcd get-prefix through its Go client; b. a cold `cellnode find`
//     process against an `etcdctl get --prefix` process; c. start of
//     `cellnode run` to findable against lease grant + put + get; d. the
//     same with a peer SIGKILLed just before each start; e. SIGTERM of a
//     sidecar to gone from finds against lease revoke + get. The rounds of
//     a and b come first, then those of c and e, then d, then a and b
//     again (a', b': after peers have left).
//   - withdrawals: f. sidecars SIGTERMed as soon as they are findable,
//     in batches, with peers SIGKILLed before each batch so that publishes
//     run into dead peers; counts withdrawals lost (an instance still
//     listed 5 s after its sidecar exited 0).
//   - bootstrapkill: g. the bootstrap SIGKILLed; how many instances stay
//     findable through the surviving nodes.
func BenchmarkLoopback(b *testing.B) {
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	bin := prepare(b)
	b.Run("latency", func(b *testing.B) { benchLatency(b, cfg, bin) })
	b.Run("withdrawals", func(b *testing.B) { benchWithdrawals(b, cfg, bin) })
	b.Run("bootstrapkill", func(b *testing.B) { benchBootstrapKill(b, cfg, bin) })
	b.Run("pair", func(b *testing.B) { benchPair(b, cfg, bin, os.Getenv("LOOPBACK_BIN_B")) })
}

// prepare is what every benchmark of the package needs first: the open
// files limit raised, etcd installed (the benchmark is skipped when it
// cannot be), and the cellnode binary: LOOPBACK_BIN, a prebuilt one that
// keeps the build out of the timing lock, or one built now.
func prepare(b *testing.B) string {
	raiseNofile(b)
	ctx := context.Background()
	if err := InstallEtcd(ctx, filepath.Join("..", "etcd.sh")); err != nil {
		b.Skipf("etcd cannot be installed, so there is nothing to compare cellnode with: %v", err)
	}
	bin := os.Getenv("LOOPBACK_BIN")
	if bin == "" {
		var err error
		if bin, err = Build(ctx, moduleDir, b.TempDir()); err != nil {
			b.Fatal(err)
		}
	}
	return bin
}

// env is what every sub-benchmark sets up: a network with its long-lived
// sidecars, etcd with the same instances, and the table.
type env struct {
	b       *testing.B
	cfg     Config
	ctx     context.Context
	dir     string
	cl      *Cluster
	etcd    *Etcd
	stable  []*Sidecar // announcing svcCell; the warm finders
	churn   []*Sidecar // announcing churnCell, oldest first
	finders *Finders
	table   *Table
	load0   string
}

// setup starts etcd (unless noEtcd), a bootstrap, cfg.Sidecars sidecars of
// svcCell and churn sidecars of churnCell, and waits until every finder
// lists every instance of svcCell and some finder lists every churn
// instance.
func setup(b *testing.B, cfg Config, bin string, churn int, noEtcd bool) *env {
	b.Helper()
	dir := b.TempDir()
	if os.Getenv("LOOPBACK_KEEP") != "" { // homes and logs kept for a look afterwards
		var err error
		if dir, err = os.MkdirTemp("", "loopback-"); err != nil {
			b.Fatal(err)
		}
		b.Logf("homes and logs kept in %s", dir)
	}
	e := &env{b: b, cfg: cfg, ctx: context.Background(), dir: dir, table: &Table{}, load0: loadavg()}
	if !noEtcd {
		et, err := StartEtcd(e.ctx, e.dir)
		if err != nil {
			b.Fatal(err)
		}
		e.etcd = et
		b.Cleanup(et.Close)
	}
	cl, err := NewCluster(e.ctx, bin, e.dir)
	if err != nil {
		b.Fatal(err)
	}
	cl.DHTMode = cfg.DHTMode
	cl.RunArgs = strings.Fields(os.Getenv("LOOPBACK_RUN_ARGS"))
	e.cl = cl
	b.Cleanup(cl.Close)
	e.stable = e.startMany(svcCell, cfg.Sidecars)
	e.finders = NewFinders(e.stable)
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	for _, f := range e.stable {
		for _, s := range e.stable {
			if _, err := NewFinders([]*Sidecar{f}).WaitListed(ctx, svcCell, s.Endpoint, true); err != nil {
				b.Fatalf("setup: %v\n%s", err, s.Proc.Tail(2000))
			}
		}
	}
	e.churn = e.startMany(churnCell, churn)
	for _, s := range e.churn {
		if _, err := e.finders.WaitListed(ctx, churnCell, s.Endpoint, true); err != nil {
			b.Fatalf("setup: %v\n%s", err, s.Proc.Tail(2000))
		}
	}
	if e.etcd != nil {
		// The etcd side's long-lived instances, under one lease kept alive
		// as a sidecar would.
		l, err := e.etcd.Client.Grant(ctx, 60)
		if err != nil {
			b.Fatal(err)
		}
		ka, err := e.etcd.Client.KeepAlive(context.WithoutCancel(ctx), l.ID)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for range ka {
			}
		}()
		for i, s := range e.stable {
			if _, err := e.etcd.Client.Put(ctx, fmt.Sprintf("%s%d", etcdPrefix(svcCell), i), s.Endpoint, clientv3.WithLease(l.ID)); err != nil {
				b.Fatal(err)
			}
		}
	}
	return e
}

// startMany starts n sidecars of cell at once and waits for their APIs.
func (e *env) startMany(cell string, n int) []*Sidecar {
	e.b.Helper()
	var out []*Sidecar
	for range n {
		s, err := e.cl.Start(cell)
		if err != nil {
			e.b.Fatal(err)
		}
		out = append(out, s)
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	for _, s := range out {
		if err := s.WaitAPI(ctx); err != nil {
			e.b.Fatal(err)
		}
	}
	return out
}

// snapshot adds to the table what the nodes say of themselves: where the
// last records were stored, DHT mode, routing tables.
func (e *env) snapshot(prefix string, nodes []*Sidecar, boot bool) {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	var stored, servers, rt Sample
	multi := 0
	for _, s := range nodes {
		st, err := s.Status(ctx)
		if err != nil {
			e.table.Note("%s status of %s: %v", prefix, s.Home, err)
			continue
		}
		for _, c := range st.Cells {
			stored.Add(time.Duration(c.StoredAt))
			if c.StoredAt > 1 {
				multi++
			}
		}
		if st.Server {
			servers.Add(1)
		}
		rt.Add(time.Duration(st.Peers))
	}
	e.table.Count(prefix+"stored_at_p50", prefix+"peers that stored a sidecar's last record (p50)", float64(stored.Percentile(50)), 0)
	e.table.Count(prefix+"stored_above_1", prefix+"sidecars whose last record was stored at more than one peer", float64(multi), float64(stored.Len()))
	e.table.Count(prefix+"dht_servers", prefix+"sidecars serving the DHT", float64(servers.Len()), float64(len(nodes)))
	e.table.Count(prefix+"routing_table_p50", prefix+"routing table size of a sidecar (p50)", float64(rt.Percentile(50)), 0)
	if boot {
		if st, err := e.cl.BootStatus(ctx); err == nil {
			e.table.Count(prefix+"boot_routing_table", prefix+"routing table size of the bootstrap", float64(st.Peers), 0)
		}
	}
}

// report prints the table and hands its metrics to b.
func (e *env) report(title string) {
	flags := "default flags"
	if e.cfg.DHTMode != "" {
		flags = "--dht-mode " + e.cfg.DHTMode
	}
	e.table.Title = fmt.Sprintf("%s; sidecars with %s\ncellnode %s, %s, GOMAXPROCS %d; load average at start %s, at end %s",
		title, flags, gitRev(), e.etcdVersion(), runtime.GOMAXPROCS(0), e.load0, loadavg())
	var sb strings.Builder
	if err := e.table.Write(&sb); err != nil {
		e.b.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "\n%s\n", sb.String())
	for _, m := range e.table.Metrics() {
		e.b.ReportMetric(m.Value, m.Unit)
	}
}

func (e *env) etcdVersion() string {
	if e.etcd == nil || e.etcd.Version == "" {
		return "no etcd"
	}
	return e.etcd.Version
}

// pair runs cell and etcd in the order the round gives: cellnode first in
// even rounds, etcd first in odd ones, so that neither side always runs
// right after the other's heavier work.
func pair(round int, cell, etcd func()) {
	if round%2 == 0 {
		cell()
		etcd()
	} else {
		etcd()
		cell()
	}
}

// benchLatency: measures a–e, interleaved round by round, in four phases
// so that each measure states what the network has been through: a and b
// on a network no node has left; c and e (each e stops the sidecar its c
// started); d (a peer SIGKILLed each round); a and b again, after all that.
func benchLatency(b *testing.B, cfg Config, bin string) {
	e := setup(b, cfg, bin, cfg.Churn, false)
	e.snapshot("", e.stable, true)
	t := e.table
	warm := t.Measure("warm_find", "a. warm find: local API / etcd Go client get-prefix")
	cold := t.Measure("cold_find", "b. cold find: cellnode find process / etcdctl get --prefix")
	start := t.Measure("start_to_findable", "c. start to findable / lease grant+put+get")
	stop := t.Measure("stop_to_gone", "e. SIGTERM to gone / lease revoke+get")
	churned := t.Measure("start_to_findable_peer_left", "d. c with a peer SIGKILLed each round")
	warmAfter := t.Measure("warm_find_after_churn", "a'. a after c, e and d (peers gone)")
	coldAfter := t.Measure("cold_find_after_churn", "b'. b after c, e and d (peers gone)")
	procStart := t.Measure("process_start", "p. process start: cellnode version / etcdctl version")
	var badExit, incomplete int
	ctx := e.ctx
	want := endpoints(e.stable)

	// a. Warm finds of svcCell and get-prefix through the Go client. Each
	// find is also counted by how the API answered (ServedBy): rows
	// KEY_hit, KEY_stale and KEY_miss, cellnode side only.
	split := func(m *Measure, s Served) *Sample {
		label := m.What
		if i := strings.Index(label, ":"); i > 0 {
			label = label[:i]
		}
		return &t.Measure(m.Key+"_"+s.String(), fmt.Sprintf("%s, served %s", label, s)).Cell
	}
	for _, m := range []*Measure{warm, warmAfter} {
		for _, s := range []Served{ServedHit, ServedStale, ServedMiss} {
			split(m, s)
		}
	}
	// The warm finds all go to one sidecar, as a service asks the sidecar on
	// its own machine. Spreading a round's finds over every finder made each
	// one's first find of the round stale (the rounds are 0.3 to 1 s apart,
	// findFresh is 100 ms), so all six started a background refresh at once:
	// six network finds, each answered by the other sidecars, ran on this
	// machine's two cores during the round and delayed the finds being
	// timed. On a real network five of those six refreshes run on other
	// machines. (Taking the next sidecar each round instead would leave each
	// one unasked for six rounds, past findMaxAge: a miss each round.) One
	// sidecar's refreshes come at most every findFresh, well under a
	// storer's per-peer rate limit.
	warmRound := func(m *Measure, r int) {
		finder := e.stable[0]
		pair(r, func() {
			for range cfg.WarmFinds {
				fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				res, err := finder.Find(fctx, svcCell)
				d := time.Since(t0)
				cancel()
				switch {
				case err != nil:
					m.Cell.Fail()
					t.Note("%s round %d: %v", m.Key, r, err)
				case res.Count(want) != len(want):
					m.Cell.Fail()
					incomplete++
				default:
					m.Cell.Add(d)
					split(m, res.Served).Add(d)
				}
			}
		}, func() {
			for range cfg.WarmFinds {
				d, n, err := e.etcd.GetPrefix(ctx, etcdPrefix(svcCell))
				if err != nil || n != len(want) {
					m.Etcd.Fail()
					continue
				}
				m.Etcd.Add(d)
			}
		})
	}
	// b. Cold finds: a fresh process each.
	coldRound := func(m *Measure, r, n int) {
		pair(r, func() {
			for range n {
				d, res, err := e.cl.ColdFind(ctx, svcCell)
				switch {
				case err != nil:
					m.Cell.Fail()
					t.Note("%s round %d: %v", m.Key, r, err)
				case res.Count(want) != len(want):
					m.Cell.Fail()
					incomplete++
				default:
					m.Cell.Add(d)
				}
			}
		}, func() {
			for range n {
				d, kvs, err := e.etcd.CtlGetPrefix(ctx, etcdPrefix(svcCell))
				if err != nil || len(kvs) != len(want) {
					m.Etcd.Fail()
					continue
				}
				m.Etcd.Add(d)
			}
		})
	}

	// p. What b's processes cost before they do any work: a process that
	// starts, prints its version and exits, on each side. b's ratio is
	// read beside this one.
	startRound := func(m *Measure, r, n int) {
		pair(r, func() {
			for range n {
				if d, err := TimeRun(ctx, bin, []string{"version"}, nil); err != nil {
					m.Cell.Fail()
					t.Note("%s round %d: %v", m.Key, r, err)
				} else {
					m.Cell.Add(d)
				}
			}
		}, func() {
			for range n {
				if d, err := TimeRun(ctx, "etcdctl", []string{"version"}, []string{"ETCDCTL_API=3"}); err != nil {
					m.Etcd.Fail()
				} else {
					m.Etcd.Add(d)
				}
			}
		})
	}

	for r := range cfg.Rounds {
		warmRound(warm, r)
		coldRound(cold, r, cfg.ColdFinds)
		startRound(procStart, r, cfg.ColdFinds)
	}
	for r := range cfg.Rounds {
		// c. Start to findable; e. SIGTERM to gone, on the same sidecar.
		var s *Sidecar
		var lease clientv3.LeaseID
		key := fmt.Sprintf("%s%d", etcdPrefix(startCell), r)
		pair(r, func() {
			s = e.startFindable(&start.Cell, r, "c")
		}, func() {
			var err error
			var d time.Duration
			if lease, d, err = e.etcd.Register(ctx, key, "127.0.0.1:1", time.Minute); err != nil {
				start.Etcd.Fail()
				return
			}
			start.Etcd.Add(d)
		})
		pair(r, func() {
			if s != nil && !e.stopGone(s, &stop.Cell, r) {
				badExit++
			}
		}, func() {
			if lease == 0 {
				return
			}
			d, err := e.etcd.Deregister(ctx, key, lease)
			if err != nil {
				stop.Etcd.Fail()
				return
			}
			stop.Etcd.Add(d)
		})
	}
	for r := range cfg.Rounds {
		// d. Start to findable with a peer SIGKILLed just before. The new
		// sidecar joins the peers to kill, in place of the one killed.
		key := fmt.Sprintf("%s%d-churn", etcdPrefix(startCell), r)
		pair(r, func() {
			if len(e.churn) == 0 {
				return
			}
			e.churn[0].Kill()
			e.churn = e.churn[1:]
			if s := e.startFindable(&churned.Cell, r, "d"); s != nil {
				e.churn = append(e.churn, s)
			}
		}, func() {
			// An etcd client that dies costs the server nothing until its
			// lease expires: there is no peer to lose, the work is c's.
			l, d, err := e.etcd.Register(ctx, key, "127.0.0.1:1", time.Minute)
			if err != nil {
				churned.Etcd.Fail()
				return
			}
			churned.Etcd.Add(d)
			_, _ = e.etcd.Client.Revoke(ctx, l)
		})
	}
	for r := range cfg.Rounds {
		warmRound(warmAfter, r)
		coldRound(coldAfter, r, 1)
	}
	t.Count("bad_exits", "e. sidecars that did not exit 0 on SIGTERM", float64(badExit), float64(cfg.Rounds))
	t.Count("incomplete_finds", "a/b. finds that did not list every instance", float64(incomplete), 0)
	e.snapshot("end_", e.stable, true)
	t.Note("in this order: a and b, round by round; then c and e; then d; then a' and b' (one cold find per round)")
	t.Note("d: etcd has no peer to lose (a client that dies leaves a lease to expire), so its side does c's work again")
	t.Note("%d long-lived sidecars (the warm finders, %d instances of %s), %d more kept to be SIGKILLed; etcd holds the same instances", cfg.Sidecars, cfg.Sidecars, svcCell, cfg.Churn)
	e.report(fmt.Sprintf("loopback latency: %d rounds, %d warm and %d cold finds per side per round", cfg.Rounds, cfg.WarmFinds, cfg.ColdFinds))
}

// benchPair times cold finds of two cellnode binaries on one network (of
// the first binary's sidecars), in turn: LOOPBACK_BIN (or the binary built
// from this tree) as A against LOOPBACK_BIN_B as B, Rounds × ColdFinds
// pairs, A first in even pairs and B first in odd ones. It reports each
// side's p50 and p99 and the median of the pairs' ratios A/B: how a change
// to the one-shot process (build flags, start-up, the find) moves the
// whole process, which a difference of a few per cent in a benchmark of
// its own does not show. Skipped without LOOPBACK_BIN_B:
//
//	LOOPBACK_BIN=/tmp/new LOOPBACK_BIN_B=/tmp/old go test -run '^$' -bench Loopback/pair -benchtime 1x ./internal/bench/loopback
func benchPair(b *testing.B, cfg Config, binA, binB string) {
	if binB == "" {
		b.Skip("LOOPBACK_BIN_B is not set: no second binary to compare with")
	}
	if _, err := os.Stat(binB); err != nil {
		b.Fatalf("LOOPBACK_BIN_B: %v", err)
	}
	e := setup(b, cfg, binA, cfg.Churn, true)
	want := endpoints(e.stable)
	var sa, sb Sample
	failed := 0
	one := func(bin string, s *Sample) {
		d, res, err := e.cl.ColdFindWith(e.ctx, bin, svcCell)
		switch {
		case err != nil:
			b.Logf("%s: %v", bin, err)
			failed++
		case res.Count(want) != len(want):
			failed++
		default:
			s.Add(d)
			return
		}
		s.Fail()
	}
	n := cfg.Rounds * cfg.ColdFinds
	for i := range n {
		// A pair whose side failed is dropped from both, to keep the
		// pairs aligned.
		la, lb := sa.Len(), sb.Len()
		pair(i, func() { one(binA, &sa) }, func() { one(binB, &sb) })
		if sa.Len() != sb.Len() {
			sa.d, sb.d = sa.d[:la], sb.d[:lb]
		}
	}
	ratio := PairedRatio(&sa, &sb)
	fmt.Printf("\ncold finds in pairs on one network (%d sidecars of A, default flags), load average at start %s, at end %s\n", cfg.Sidecars+cfg.Churn, e.load0, loadavg())
	fmt.Printf("  A %s: p50 %.1f ms, p99 %.1f ms (%d)\n", binA, ms(sa.Percentile(50)), ms(sa.Percentile(99)), sa.Len())
	fmt.Printf("  B %s: p50 %.1f ms, p99 %.1f ms (%d)\n", binB, ms(sb.Percentile(50)), ms(sb.Percentile(99)), sb.Len())
	fmt.Printf("  A/B, median of the pairs' ratios: %.3f; finds that failed or missed an instance: %d of %d\n", ratio, failed, 2*n)
	b.ReportMetric(ms(sa.Percentile(50)), "a_p50_ms")
	b.ReportMetric(ms(sb.Percentile(50)), "b_p50_ms")
	b.ReportMetric(ratio, "a/b_p50")
	b.ReportMetric(float64(failed), "failed_finds")
}

// startFindable starts a sidecar of startCell and polls warm finders until
// they list it; it adds the time from process start to that find's return
// to s, or a failure after a minute (and kills the sidecar).
func (e *env) startFindable(sample *Sample, round int, what string) *Sidecar {
	s, err := e.cl.Start(startCell)
	if err != nil {
		e.b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	at, err := e.finders.WaitListed(ctx, startCell, s.Endpoint, true)
	if err != nil {
		sample.Fail()
		e.table.Note("round %d %s: %v", round, what, err)
		s.Kill()
		return nil
	}
	sample.Add(at.Sub(s.Proc.Started))
	return s
}

// stopGone SIGTERMs s and polls warm finders until they no longer list it;
// it adds the time from the signal to that find's return to sample. It
// reports whether s exited 0.
func (e *env) stopGone(s *Sidecar, sample *Sample, round int) bool {
	defer s.CloseService()
	ctx, cancel := context.WithTimeout(e.ctx, 90*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.Proc.Signal(syscall.SIGTERM); err != nil {
		e.b.Fatal(err)
	}
	at, err := e.finders.WaitListed(ctx, startCell, s.Endpoint, false)
	if err != nil {
		sample.Fail()
		e.table.Note("round %d e: %v", round, err)
	} else {
		sample.Add(at.Sub(t0))
	}
	code, err := s.Proc.Wait(ctx)
	if err != nil {
		s.Kill()
		return false
	}
	return code == 0
}

// benchWithdrawals: f. SIGTERMs counted for lost withdrawals.
func benchWithdrawals(b *testing.B, cfg Config, bin string) {
	e := setup(b, cfg, bin, cfg.Churn, false)
	t := e.table
	startF := t.Measure("stop_batch_start_to_findable", "f. start to findable in a batch / lease grant+put+get")
	gone := t.Measure("stop_batch_stop_to_exit", "f. SIGTERM to exit / lease revoke+get")
	var stops, exited0, lost, listedFirst, notFindable, checkFailed, etcdLost int
	batch := 0
	for stops < cfg.Stops {
		n := min(cfg.Batch, cfg.Stops-stops)
		pair(batch, func() {
			r := e.stopBatch(n, startF, gone)
			exited0 += r.exited0
			lost += r.lost
			listedFirst += r.listedFirst
			notFindable += r.notFindable
			checkFailed += r.checkFailed
		}, func() {
			for i := range n {
				key := fmt.Sprintf("%s%d-%d", etcdPrefix(stopCell), batch, i)
				l, d, err := e.etcd.Register(e.ctx, key, "127.0.0.1:1", time.Minute)
				if err != nil {
					startF.Etcd.Fail()
					continue
				}
				startF.Etcd.Add(d)
				d, err = e.etcd.Deregister(e.ctx, key, l)
				if err != nil {
					etcdLost++
					gone.Etcd.Fail()
					continue
				}
				gone.Etcd.Add(d)
			}
		})
		stops += n
		batch++
	}
	t.Count("sigterms", "f. sidecars SIGTERMed once findable", float64(stops-notFindable), float64(stops))
	t.Count("exited_0", "f. of those, exited 0", float64(exited0), float64(stops-notFindable))
	t.Count("lost_withdrawals", "f. LOST withdrawals: exited 0, still listed by a warm find 5 s later", float64(lost), float64(exited0))
	t.Count("listed_after_exit", "f. exited 0, listed by the first warm find that started after the exit", float64(listedFirst), float64(exited0))
	t.Count("lost_checks_failed", "f. lost-withdrawal checks (one find per long-lived sidecar per batch) that failed", float64(checkFailed), float64(len(e.stable)*batch))
	t.Count("etcd_lost", "f. etcd keys still there after their lease was revoked", float64(etcdLost), float64(stops))
	e.snapshot("end_", e.stable, true)
	t.Note("f: before each batch of %d, %d of the %d churn sidecars are SIGKILLed (replaced after the batch), so that publishes meet dead peers", cfg.Batch, min(2, cfg.Churn), cfg.Churn)
	e.report(fmt.Sprintf("loopback withdrawals: %d SIGTERMs in batches of %d", cfg.Stops, cfg.Batch))
}

type batchResult struct{ exited0, lost, listedFirst, notFindable, checkFailed int }

// stopBatch kills two churn sidecars, starts n sidecars of stopCell at
// once, SIGTERMs each as soon as a warm find lists it, and checks who is
// still listed after the exits.
func (e *env) stopBatch(n int, startF, gone *Measure) batchResult {
	var res batchResult
	kill := min(2, len(e.churn))
	for _, s := range e.churn[:kill] {
		s.Kill()
	}
	e.churn = e.churn[kill:]
	type member struct {
		s        *Sidecar
		termAt   time.Time // zero until SIGTERMed
		exitAt   time.Time // zero until exited
		code     int
		checked  bool // the first find after the exit has been looked at
		findable bool
	}
	ms := make([]*member, n)
	for i := range ms {
		s, err := e.cl.Start(stopCell)
		if err != nil {
			e.b.Fatal(err)
		}
		ms[i] = &member{s: s}
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		pending := 0
		now := time.Now()
		for _, m := range ms {
			if at, ok := m.s.Proc.ExitedAt(); ok && m.exitAt.IsZero() && !m.termAt.IsZero() {
				m.exitAt = at
				m.code, _ = m.s.Proc.Wait(e.ctx)
				gone.Cell.Add(m.exitAt.Sub(m.termAt))
			}
			if m.termAt.IsZero() || m.exitAt.IsZero() || !m.checked {
				pending++
			}
		}
		if pending == 0 || now.After(deadline) {
			break
		}
		fctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		started := time.Now()
		r, err := e.finders.FindFresh(fctx, stopCell)
		cancel()
		if err != nil {
			continue
		}
		at := time.Now()
		for _, m := range ms {
			switch {
			case m.termAt.IsZero() && r.Lists(m.s.Endpoint):
				startF.Cell.Add(at.Sub(m.s.Proc.Started))
				m.findable = true
				m.termAt = time.Now()
				if err := m.s.Proc.Signal(syscall.SIGTERM); err != nil {
					e.b.Fatal(err)
				}
			case !m.exitAt.IsZero() && !m.checked && started.After(m.exitAt):
				m.checked = true
				if m.code == 0 && r.Lists(m.s.Endpoint) {
					res.listedFirst++
				}
			}
		}
		time.Sleep(PollInterval)
	}
	// Whatever did not get that far in time is killed and not counted.
	var lastExit time.Time
	for _, m := range ms {
		if !m.findable {
			res.notFindable++
			startF.Cell.Fail()
		}
		if m.exitAt.IsZero() {
			if m.findable {
				gone.Cell.Fail()
			}
			m.s.Kill()
			continue
		}
		if m.exitAt.After(lastExit) {
			lastExit = m.exitAt
		}
	}
	// 5 s after the last exit, every finder is asked at once: a withdrawal that
	// reached the network hides the instance at once; one that did not
	// leaves it listed for up to a record's life.
	if !lastExit.IsZero() {
		time.Sleep(time.Until(lastExit.Add(5 * time.Second)))
	}
	listed := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range e.stable {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
			r, err := f.FindFresh(ctx, stopCell)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.checkFailed++
				return
			}
			for _, m := range ms {
				if r.Lists(m.s.Endpoint) {
					listed[m.s.Endpoint] = true
				}
			}
		})
	}
	wg.Wait()
	for _, m := range ms {
		m.s.CloseService()
		if m.exitAt.IsZero() || m.code != 0 {
			continue
		}
		res.exited0++
		if listed[m.s.Endpoint] {
			res.lost++
		}
	}
	// Replace the killed churn sidecars; they need not be findable yet.
	e.churn = append(e.churn, e.startMany(churnCell, kill)...)
	return res
}

// benchBootstrapKill: g. the bootstrap SIGKILLed; are the instances still
// findable through the surviving nodes?
func benchBootstrapKill(b *testing.B, cfg Config, bin string) {
	e := setup(b, cfg, bin, 0, true)
	t := e.table
	finds := t.Measure("find_after_boot_kill", "g. warm find after the bootstrap was SIGKILLed")
	e.snapshot("", e.stable, true)
	if err := e.cl.Boot.Signal(syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	<-e.cl.Boot.Done()
	killed := time.Now()
	k := len(e.stable)
	minFindable, lastFindable := k, k
	var firstDrop, allGone time.Duration
	checks := 0
	for time.Since(killed) < cfg.Survive {
		checks++
		next := time.Now().Add(5 * time.Second)
		// Every surviving node finds at once. An instance is findable when
		// a node other than its own lists it (its own node sees it on this
		// machine, without the DHT).
		results := make([]*FindResult, k)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i, f := range e.stable {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second) // cellnode find's default --timeout
				defer cancel()
				t0 := time.Now()
				r, err := f.Find(ctx, svcCell)
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					finds.Cell.Fail()
					return
				}
				finds.Cell.Add(d)
				results[i] = r
			})
		}
		wg.Wait()
		findable := map[string]bool{}
		for i, r := range results {
			for j, s := range e.stable {
				if r != nil && i != j && r.Lists(s.Endpoint) {
					findable[s.Endpoint] = true
				}
			}
		}
		n := len(findable)
		since := time.Since(killed)
		if n < k && firstDrop == 0 {
			firstDrop = since
		}
		if n == 0 && allGone == 0 {
			allGone = since
		}
		minFindable = min(minFindable, n)
		lastFindable = n
		time.Sleep(time.Until(next))
	}
	t.Count("findable_min", fmt.Sprintf("g. instances findable through surviving nodes, lowest over %s after the bootstrap was SIGKILLed (%d checks)", cfg.Survive, checks), float64(minFindable), float64(k))
	t.Count("findable_end", "g. instances findable at the last check", float64(lastFindable), float64(k))
	t.Count("first_drop_s", "g. seconds from the kill to the end of the first check that missed an instance (0: none did)", firstDrop.Seconds(), 0)
	t.Count("all_gone_s", "g. seconds from the kill to the end of the first check that found none (0: never)", allGone.Seconds(), 0)
	e.snapshot("end_", e.stable, false)
	t.Note("g: every 5 s each surviving node finds %s (in parallel, 15 s timeout as cellnode find's default; a failed find lists nothing); records are re-published every 20 s and expire after 60 s", svcCell)
	t.Note("g: a single etcd member has no such test (kill it and every key is gone)")
	e.report(fmt.Sprintf("loopback bootstrap killed: %d sidecars, watched for %s", k, cfg.Survive))
}

func endpoints(ss []*Sidecar) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.Endpoint
	}
	return out
}

// raiseNofile raises the soft limit on open files to the hard limit; the
// child processes inherit it.
func raiseNofile(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Logf("getrlimit: %v", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Logf("setrlimit: %v", err)
		}
	}
}

// gitRev is the tree's commit, "+dirty" when it has changes.
func gitRev() string {
	out, err := exec.Command("git", "-C", moduleDir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "(unknown commit)"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", moduleDir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += "+dirty"
	}
	return rev
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
