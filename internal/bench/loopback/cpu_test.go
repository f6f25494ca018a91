package loopback

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// BenchmarkSidecarCPU measures what a sidecar costs the machine it runs
// on: it starts a bootstrap, then an idle single-member etcd and
// LOOPBACK_CPU_SIDECARS (16) `cellnode run` sidecars at once, each
// announcing a cell of its own, and reads every process's CPU time (user +
// system, /proc/<pid>/stat) over (a) the first 10 s after its start and
// (b) a steady 30 s window 5 s after that, as ms of CPU per second. The
// etcd member, measured over the same windows of the same run, is the
// baseline: ratios are to it. Run it with
//
//	go test -run '^$' -bench SidecarCPU -benchtime 1x ./internal/bench/loopback
//
// (LOOPBACK_CPU_SIDECARS=32 for the larger network; see CPUConfig and
// CPUEnv for the windows and LOOPBACK_CPU_PROFILE for profiles;
// LOOPBACK_BIN, LOOPBACK_RUN_ARGS and LOOPBACK_KEEP as for
// BenchmarkLoopback). It runs once whatever b.N is, and checks at the end
// that every sidecar's cell is findable, so that a cut that breaks the
// network does not pass for a saving.
func BenchmarkSidecarCPU(b *testing.B) {
	cfg, err := CPUConfigFromEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	bin := prepare(b)
	ctx := context.Background()
	dir := b.TempDir()
	if os.Getenv("LOOPBACK_KEEP") != "" {
		if dir, err = os.MkdirTemp("", "loopback-cpu-"); err != nil {
			b.Fatal(err)
		}
		b.Logf("homes and logs kept in %s", dir)
	}
	load0 := loadavg()
	cl, err := NewCluster(ctx, bin, dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	cl.RunArgs = strings.Fields(os.Getenv("LOOPBACK_RUN_ARGS"))
	if cfg.Profile != "" {
		if err := os.MkdirAll(cfg.Profile, 0o755); err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		n := 0
		cl.RunEnv = func(string) []string {
			mu.Lock()
			defer mu.Unlock()
			n++
			return []string{
				fmt.Sprintf("CELLNODE_CPUPROFILE=%s", filepath.Join(cfg.Profile, fmt.Sprintf("sidecar-%02d.pprof", n))),
				"CELLNODE_CPUPROFILE_SPLIT=" + cfg.Start.String(),
			}
		}
	}

	// etcd and the sidecars start together, so that etcd's start window
	// is the sidecars' too.
	type started struct {
		et  *Etcd
		err error
	}
	etcdc := make(chan started, 1)
	go func() {
		et, err := StartEtcd(ctx, dir)
		etcdc <- started{et, err}
	}()
	var sidecars []*Sidecar
	for i := range cfg.Sidecars {
		s, err := cl.Start(fmt.Sprintf("bench/cpu-%02d", i))
		if err != nil {
			b.Fatal(err)
		}
		sidecars = append(sidecars, s)
	}
	st := <-etcdc
	if st.err != nil {
		b.Fatal(st.err)
	}
	et := st.et
	b.Cleanup(et.Close)
	first, last := sidecars[0].Proc.Started, sidecars[len(sidecars)-1].Proc.Started

	// (a) from each process's start (the bootstrap's: from the first
	// sidecar's) to Start after it.
	var wg sync.WaitGroup
	startW := make([]CPUWindow, len(sidecars))
	read := func(p *Proc, at time.Time, w *CPUWindow, end bool) {
		time.Sleep(time.Until(at))
		c, err := CPUTime(p.Pid())
		if err != nil {
			b.Errorf("%s: %v", p.Name, err)
		}
		if end {
			w.To, w.CPUTo = time.Now(), c
		} else {
			w.From, w.CPUFrom = time.Now(), c
		}
	}
	for i, s := range sidecars {
		startW[i].From = s.Proc.Started // CPU 0 then: the process did not exist
		wg.Go(func() { read(s.Proc, s.Proc.Started.Add(cfg.Start), &startW[i], true) })
	}
	etcdStart := CPUWindow{From: et.Proc.Started}
	wg.Go(func() { read(et.Proc, et.Proc.Started.Add(cfg.Start), &etcdStart, true) })
	var bootStart CPUWindow
	read(cl.Boot, first, &bootStart, false) // already past: read now
	wg.Go(func() { read(cl.Boot, first.Add(cfg.Start), &bootStart, true) })
	wg.Wait()

	// (b) every process over the same steady window.
	t1 := last.Add(cfg.Start + cfg.Settle)
	t2 := t1.Add(cfg.Steady)
	steadyW := make([]CPUWindow, len(sidecars))
	var etcdSteady, bootSteady CPUWindow
	for _, end := range []bool{false, true} {
		at := t1
		if end {
			at = t2
		}
		time.Sleep(time.Until(at))
		for i, s := range sidecars {
			read(s.Proc, at, &steadyW[i], end)
		}
		read(et.Proc, at, &etcdSteady, end)
		read(cl.Boot, at, &bootSteady, end)
	}
	var rss Rates
	for _, s := range sidecars {
		if r, err := RSS(s.Proc.Pid()); err == nil {
			rss = append(rss, float64(r)/(1<<20))
		}
	}
	etcdRSS, _ := RSS(et.Proc.Pid())
	for _, s := range sidecars {
		if s.Proc.Exited() {
			b.Fatalf("%s exited during the run\n%s", s.Proc.Name, s.Proc.Tail(2000))
		}
	}

	// Every cell findable, through one sidecar's node, after the windows.
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	finders := NewFinders(sidecars[:1])
	findable := 0
	for _, s := range sidecars {
		if _, err := finders.WaitListed(fctx, s.Name, s.Endpoint, true); err == nil {
			findable++
		} else {
			b.Logf("%s not findable: %v", s.Name, err)
		}
	}

	// Connections per connected peer: above 1, peers reached twice.
	var conns, connPeers int
	for _, s := range sidecars {
		if st, err := s.Status(fctx); err == nil {
			conns += st.Connections
			connPeers += st.ConnectedPeers
		}
	}
	connRatio := 0.0
	if connPeers > 0 {
		connRatio = float64(conns) / float64(connPeers)
	}

	rates := func(ws []CPUWindow) Rates {
		var r Rates
		for _, w := range ws {
			r = append(r, w.Rate())
		}
		return r
	}
	sa, ss := rates(startW), rates(steadyW)
	ratio := func(a, b float64) string {
		if b == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f×", a/b)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nsidecar CPU: %d sidecars (`cellnode run`, %s) and a bootstrap on loopback, an idle etcd member beside them\n",
		len(sidecars), runFlags(cl.RunArgs))
	fmt.Fprintf(&sb, "cellnode %s, %s, GOMAXPROCS %d, %d CPUs; load average at start %s, at end %s\n",
		gitRev(), etcdVersion(et), runtime.GOMAXPROCS(0), runtime.NumCPU(), load0, loadavg())
	fmt.Fprintf(&sb, "ms of CPU (user+sys) per s; (a) first %s after each start, (b) %s from %s after the last start\n\n",
		cfg.Start, cfg.Steady, cfg.Start+cfg.Settle)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "process\t(a) start\t(b) steady\t\n")
	fmt.Fprintf(tw, "sidecar, mean\t%.1f\t%.1f\t\n", sa.Mean(), ss.Mean())
	fmt.Fprintf(tw, "sidecar, p50\t%.1f\t%.1f\t\n", sa.Quantile(50), ss.Quantile(50))
	fmt.Fprintf(tw, "sidecar, max\t%.1f\t%.1f\t\n", sa.Quantile(100), ss.Quantile(100))
	fmt.Fprintf(tw, "all sidecars together\t%.0f\t%.0f\t\n", sa.Mean()*float64(len(sa)), ss.Mean()*float64(len(ss)))
	fmt.Fprintf(tw, "bootstrap\t%.1f\t%.1f\t\n", bootStart.Rate(), bootSteady.Rate())
	fmt.Fprintf(tw, "etcd member (idle)\t%.1f\t%.1f\t\n", etcdStart.Rate(), etcdSteady.Rate())
	fmt.Fprintf(tw, "sidecar mean / etcd\t%s\t%s\t\n", ratio(sa.Mean(), etcdStart.Rate()), ratio(ss.Mean(), etcdSteady.Rate()))
	tw.Flush()
	fmt.Fprintf(&sb, "\nRSS at the end: sidecar p50 %.0f MiB (max %.0f), etcd %.0f MiB; cells findable after the windows: %d of %d\n",
		rss.Quantile(50), rss.Quantile(100), float64(etcdRSS)/(1<<20), findable, len(sidecars))
	fmt.Fprintf(&sb, "connections at the end: %d to %d connected peers over all sidecars (%.2f a peer)\n", conns, connPeers, connRatio)
	fmt.Fprint(os.Stdout, sb.String())

	report := func(v float64, unit string) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			b.ReportMetric(v, unit)
		}
	}
	report(sa.Mean(), "sidecar_start_ms/s")
	report(ss.Mean(), "sidecar_steady_ms/s")
	report(etcdStart.Rate(), "etcd_start_ms/s")
	report(etcdSteady.Rate(), "etcd_steady_ms/s")
	report(bootStart.Rate(), "boot_start_ms/s")
	report(bootSteady.Rate(), "boot_steady_ms/s")
	report(sa.Mean()/etcdStart.Rate(), "start_x_etcd")
	report(ss.Mean()/etcdSteady.Rate(), "steady_x_etcd")
	report(float64(findable), "findable")
	report(connRatio, "conns/peer")
	if findable < len(sidecars) {
		b.Errorf("%d of %d cells findable after the windows", findable, len(sidecars))
	}
}

func runFlags(args []string) string {
	if len(args) == 0 {
		return "default flags"
	}
	return strings.Join(args, " ")
}

func etcdVersion(e *Etcd) string {
	if e.Version == "" {
		return "etcd"
	}
	return e.Version
}
