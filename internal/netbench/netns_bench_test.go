package netbench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/internal/delaynet"
	"github.com/cellnode/cellnode/node"
)

// Knobs, from the environment:
//
//	CELLNODE_NETBENCH=1            run at all (also needs root and ip)
//	CELLNODE_NETBENCH_NODES=40     cellnode processes: 1 bootstrap + sidecars
//	CELLNODE_NETBENCH_ROUNDS=20    samples of each fast operation
//	CELLNODE_NETBENCH_SLOW=10      samples after the kills (each can take 10 s)
//	CELLNODE_NETBENCH_STARTS=8     start-to-findable samples (sidecars started late)
//	CELLNODE_NETBENCH_BIN=PATH     use this binary instead of building one
//	CELLNODE_NETBENCH_RUN_ARGS=..  extra flags for every `cellnode run` (e.g. --dht-mode server)
//	CELLNODE_NETBENCH_KEEP=1       keep homes and logs (the path is logged), with a
//	                               timeline of each cold find and late start
//	CELLNODE_NETBENCH_FIND_LOG=..  the cold finds' --log-level (info; debug adds each set's find)
//	CELLNODE_NETBENCH_SETTLE=0.5   before the late starts, wait (at most 30 s; 10 s
//	                               before each later one) until the running cellnode
//	                               processes use at most this many cores over a
//	                               second; 0: do not wait
func envInt(tb testing.TB, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}

// envCores reads a non-negative number of cores from the environment.
func envCores(tb testing.TB, key string, def float64) float64 {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		tb.Fatalf("%s=%q: want a number of cores, 0 or more", key, v)
	}
	return f
}

// settle waits until cpu (the CPU time used so far by the processes
// watched) grows by at most cores × window over one window, or max has
// passed, or ctx ends. It returns how long it waited, the last window's
// rate in cores, and whether the rate fell to cores. cores ≤ 0 returns at
// once.
func settle(ctx context.Context, cpu func() time.Duration, cores float64, window, max time.Duration) (time.Duration, float64, bool) {
	if cores <= 0 {
		return 0, 0, true
	}
	start := time.Now()
	t := time.NewTicker(window)
	defer t.Stop()
	last, lastAt := cpu(), time.Now()
	rate := math.Inf(1)
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), rate, false
		case now := <-t.C:
			used := cpu()
			rate = float64(used-last) / float64(now.Sub(lastAt))
			last, lastAt = used, now
			if rate <= cores {
				return time.Since(start), rate, true
			}
			if time.Since(start) >= max {
				return time.Since(start), rate, false
			}
		}
	}
}

// buildCellnode builds ./cmd/cellnode from this module.
func buildCellnode(tb testing.TB) string {
	if bin := os.Getenv("CELLNODE_NETBENCH_BIN"); bin != "" {
		return bin
	}
	out := filepath.Join(tb.TempDir(), "cellnode")
	cmd := exec.Command("go", "build", "-o", out, "github.com/cellnode/cellnode/cmd/cellnode")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as deployed (loopback.StaticBuild)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// BenchmarkNetns runs one bootstrap node and sidecars (one cellnode process
// each, in namespaces of their own, default flags but --bootstrap) over a
// delaynet switch with 20 ms one way, and measures in round trips of the
// link: start of `cellnode run` to findable, a warm find through a running
// node's local API (CLI process included), the repeat of that find, a cold
// one-shot find from a fresh home, the cold find after 30 % of the
// processes were SIGKILLed, and with the bootstrap node SIGKILLed too and
// peers.json in the finder's home. It runs the scenario once, whatever
// b.N is; run it with -benchtime 1x.
func BenchmarkNetns(b *testing.B) {
	if os.Getenv("CELLNODE_NETBENCH") != "1" {
		b.Skip("set CELLNODE_NETBENCH=1 to run (needs root; about 5 minutes)")
	}
	if os.Geteuid() != 0 {
		b.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		b.Skip("needs the ip command")
	}
	total := envInt(b, "CELLNODE_NETBENCH_NODES", 40)
	rounds := envInt(b, "CELLNODE_NETBENCH_ROUNDS", 20)
	slow := envInt(b, "CELLNODE_NETBENCH_SLOW", 10)
	starts := envInt(b, "CELLNODE_NETBENCH_STARTS", 8)
	settleCores := envCores(b, "CELLNODE_NETBENCH_SETTLE", 0.5)
	if total < starts+5 {
		b.Fatalf("CELLNODE_NETBENCH_NODES=%d: want at least STARTS+5 = %d", total, starts+5)
	}
	bin := buildCellnode(b)
	// The switch runs in this process: a garbage collection here would hold
	// frames up for milliseconds (see delaynet), and a locked switch thread
	// must find a free P at once. The run allocates far less than the limit.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(2 << 30))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(16, runtime.NumCPU())))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	b.ResetTimer()

	c := newCluster(b, bin)
	rtt := c.rtt()
	steadyN := total - 1 - starts
	// Namespaces: the bootstrap node, the steady sidecars, the late ones,
	// and one finder per cold find: each cold find comes from a machine of
	// its own, as a fresh home on a new machine would. (From one address,
	// libp2p's resource manager lets a peer open 16 connections in a burst,
	// then one per 5 s; a cold find dials over QUIC and TCP, so after about
	// ten cold finds from one machine the bootstrap node refuses the next
	// ones. Loopback is exempt.)
	nodes := c.add(total + rounds + 3*slow)
	bootNd, steadyNd, lateNd, finders := nodes[0], nodes[1:1+steadyN], nodes[1+steadyN:total], nodes[total:]
	nextFinder := func() *delaynet.Node {
		nd := finders[0]
		finders = finders[1:]
		return nd
	}
	// Cold finds log at info (the breakdown's timestamps) unless
	// CELLNODE_NETBENCH_FIND_LOG says otherwise (debug: each set's find).
	findLog := cmp.Or(os.Getenv("CELLNODE_NETBENCH_FIND_LOG"), "info")
	cells := max(steadyN/3, 1)
	cellName := func(i int) string { return fmt.Sprintf("bench/c%02d", i%cells) }

	fulls := arpTableFulls()
	rep := &report{rtt: rtt, net: c.net, cpu: c.cpu}
	rep.phase("setup")
	setup := time.Now()
	boot := c.startBootstrap(ctx, bootNd)
	var sidecars []*proc
	for i, nd := range steadyNd {
		sidecars = append(sidecars, c.startSidecar(nd, fmt.Sprintf("side%02d", i), cellName(i)))
	}
	for _, p := range sidecars {
		wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
		err := p.waitAnnounced(wctx)
		wcancel()
		if err != nil {
			b.Fatalf("sidecar %s: %v\n%s", p.cell, err, c.diagnose(ctx, boot, bootNd, p.nd))
		}
	}
	b.Logf("network: %d namespaces, %v one way; %d cellnode processes up in %v (1 bootstrap, %d sidecars of %d cells)",
		len(nodes), c.net.Delay(), 1+steadyN, time.Since(setup).Round(time.Millisecond), steadyN, cells)

	// A new node joins a network at rest: the steady sidecars' own start
	// (every one connecting to every other, each refresh walking the
	// buckets) keeps the cores busy for seconds after the last announce,
	// and a late start measured in that would time the machine, not the
	// start (1.5 cores during the late starts, in session 7's runs).
	rep.phase("settle")
	if waited, cores, ok := settle(ctx, c.cpu, settleCores, time.Second, 30*time.Second); settleCores > 0 {
		b.Logf("settle: %v until the cellnode processes used %.2f cores over a second (want at most %.2f; settled: %v)",
			waited.Round(time.Millisecond), cores, settleCores, ok)
	}
	rep.phase("start to findable")
	// Start of `cellnode run` to findable: a late sidecar starts while three
	// running nodes find its cell through their local APIs, back to back.
	pollers := []*proc{sidecars[0], sidecars[len(sidecars)/2], sidecars[len(sidecars)-1]}
	var unsettled int
	for k, nd := range lateNd {
		name := fmt.Sprintf("bench/new%02d", k)
		// And again before each late start: the one before (its refresh,
		// identify with every peer, the sets handed to it, the pollers'
		// finds) keeps the cores busy too, and without this the process
		// start of the later samples grew from 1 to 12 round trips.
		if k > 0 {
			if _, _, ok := settle(ctx, c.cpu, settleCores, time.Second, 10*time.Second); !ok {
				unsettled++
			}
		}
		tl := c.traceNode(nd.Index)
		p := c.startSidecar(nd, fmt.Sprintf("late%02d", k), name)
		found, err := findable(ctx, p, pollers, name)
		c.untrace(nd.Index)
		if err != nil {
			b.Fatalf("start to findable of %s: %v\n%s\n%s%s", name, err, tail(p.log),
				packetSummary(tl.get(), nd.Index, p.start), c.diagnose(ctx, boot, bootNd, nd))
		}
		writeTimeline(p.log+".timeline", tl.get(), nd.Index, p.start, fileLogs(p.log))
		rep.add("start to findable (find began)", found.start.Sub(p.start), startBreakdown(p, found, tl.get()))
		rep.add("start to findable (find answered)", found.end.Sub(p.start), nil)
		sidecars = append(sidecars, p)
	}

	if unsettled > 0 {
		b.Logf("settle: %d of %d later late starts began before the processes settled (10 s each at most)", unsettled, len(lateNd)-1)
	}

	rep.phase("warm and repeat finds")
	// Warm find through a running node's local API with the CLI (a process
	// started in the node's namespace), then its repeat; and the same find
	// made from here through the API, for a pair of node and cell not used
	// before, to split the CLI's own cost from the node's find.
	for i := range rounds {
		p := sidecars[(i*7)%steadyN]
		target := otherCell(p.cell, i+1, cellName)
		for _, op := range []string{"warm find (CLI, local API)", "repeat find (CLI, local API)"} {
			r := c.oneShot(ctx, p.nd, p.home, p.runtime, "find", target, "--json")
			if r.exit != 0 || r.reachable() == 0 {
				b.Errorf("%s of %s from %s: exit %d, %d reachable\n%s", op, target, p.home, r.exit, r.reachable(), r.stdout)
			}
			rep.add(op, r.took(), nodeBreakdown(r, p.nd, false))
			rep.found(op, r.reachable() > 0, r.reachable() == live(sidecars, target))
		}
		q := sidecars[(i*7+3)%steadyN]
		target = otherCell(q.cell, i+2, cellName)
		r := c.apiFind(ctx, q, target)
		rep.add("warm find (API call, no CLI)", r.took(), nodeBreakdown(r, q.nd, true))
		rep.found("warm find (API call, no CLI)", r.reachable() > 0, r.reachable() == live(sidecars, target))
	}
	// The same for a cell nobody announces: what a poller waiting for a
	// new cell pays per find until it is there (start to findable above).
	for i := range slow {
		q := sidecars[(i*5+1)%steadyN]
		r := c.apiFind(ctx, q, fmt.Sprintf("bench/absent%02d", i))
		if r.res != nil && len(r.res.Instances) > 0 {
			b.Errorf("warm find of a missing cell from %s: %d instances", q.home, len(r.res.Instances))
		}
		rep.add("warm find, missing cell (API call)", r.took(), []stage{counted("peers sent DHT traffic", peersContacted(r.packets, q.nd.Index))})
	}

	rep.phase("cold finds")
	// Cold one-shot finds from a fresh home; keep the last home's peers.json.
	var peersJSON []byte
	for i := range rounds {
		target := cellName(i)
		home := filepath.Join(c.dir, fmt.Sprintf("cold%02d", i))
		finder := nextFinder()
		r := c.oneShot(ctx, finder, home, home+".run", "find", target, "--json", "--log-level", findLog,
			"--bootstrap", strings.Join(c.boot, ","))
		writeTimeline(home+".timeline", r.packets, finder.Index, r.start, r.logs)
		rep.add("cold find", r.took(), coldBreakdown(r, finder, bootNd))
		rep.found("cold find", r.reachable() > 0, r.reachable() == live(sidecars, target))
		if b, err := os.ReadFile(filepath.Join(home, "peers.json")); err == nil {
			peersJSON = b
		}
	}
	b.Logf("peers.json after a cold find: %d bytes, %d peers", len(peersJSON), strings.Count(string(peersJSON), `"ID"`)+strings.Count(string(peersJSON), `"id"`))

	rep.phase("cold finds, missing cell")
	// Cold one-shot finds of a cell nobody announces: the answer is "no
	// live instance", and how long it takes to be sure of it.
	for i := range slow {
		home := filepath.Join(c.dir, fmt.Sprintf("missing%02d", i))
		finder := nextFinder()
		r := c.oneShot(ctx, finder, home, home+".run", "find", fmt.Sprintf("bench/missing%02d", i), "--json", "--log-level", findLog,
			"--bootstrap", strings.Join(c.boot, ","))
		writeTimeline(home+".timeline", r.packets, finder.Index, r.start, r.logs)
		if r.exit == 0 || r.res == nil || len(r.res.Instances) != 0 {
			b.Errorf("cold find of a missing cell from %s: exit %d, want a failure with no instances\n%s", home, r.exit, r.stdout)
		}
		rep.add("cold find, missing cell", r.took(), coldBreakdown(r, finder, bootNd))
	}

	rep.phase("cold finds, 30 % killed")
	// SIGKILL 30 % of the processes (sidecars only), then cold finds of
	// cells that still have a live instance.
	kill := int(math.Round(0.3 * float64(total)))
	victims := victimsSparing(sidecars, kill, rememberedAddrs(peersJSON))
	for _, p := range victims {
		p.kill()
	}
	b.Logf("killed %d of %d cellnode processes (sparing one sidecar that peers.json names)", len(victims), total)
	var liveCells []string
	for i := range cells {
		if live(sidecars, cellName(i)) > 0 {
			liveCells = append(liveCells, cellName(i))
		}
	}
	for i := range slow {
		target := liveCells[i%len(liveCells)]
		home := filepath.Join(c.dir, fmt.Sprintf("killed%02d", i))
		finder := nextFinder()
		r := c.oneShot(ctx, finder, home, home+".run", "find", target, "--json", "--log-level", findLog,
			"--bootstrap", strings.Join(c.boot, ","))
		writeTimeline(home+".timeline", r.packets, finder.Index, r.start, r.logs)
		rep.add("cold find, 30 % killed", r.took(), coldBreakdown(r, finder, bootNd))
		rep.found("cold find, 30 % killed", r.reachable() > 0, r.reachable() == live(sidecars, target))
	}

	rep.phase("cold finds, bootstrap down")
	// SIGKILL the bootstrap node too; the finder has peers.json.
	boot.kill()
	for i := range slow {
		target := liveCells[i%len(liveCells)]
		home := filepath.Join(c.dir, fmt.Sprintf("noboot%02d", i))
		if err := os.MkdirAll(home, 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, "peers.json"), peersJSON, 0o600); err != nil {
			b.Fatal(err)
		}
		finder := nextFinder()
		r := c.oneShot(ctx, finder, home, home+".run", "find", target, "--json", "--log-level", findLog,
			"--bootstrap", strings.Join(c.boot, ","))
		writeTimeline(home+".timeline", r.packets, finder.Index, r.start, r.logs)
		rep.add("cold find, bootstrap down", r.took(), coldBreakdown(r, finder, bootNd))
		rep.found("cold find, bootstrap down", r.reachable() > 0, r.reachable() == live(sidecars, target))
	}
	rep.phase("")
	b.StopTimer()

	st := c.net.Stats()
	b.Logf("switch: %d frames, %d bytes, %d flooded, %d ARP answered, %d dropped, %d oversize, %d errors; frames sent late by %v on average (max %v)",
		st.Frames, st.Bytes, st.Flooded, st.ARP, st.Dropped, st.Oversize, st.Errors, st.MeanLate.Round(time.Microsecond), st.MaxLate.Round(time.Microsecond))
	b.Logf("kernel ARP table overflows during the run (neighbour entries refused, all namespaces): %d", arpTableFulls()-fulls)
	rep.print()
	rep.metrics(b)
}

// live counts the running sidecars that announce cell.
func live(sidecars []*proc, cell string) int {
	k := 0
	for _, p := range sidecars {
		if p.cell == cell && p.alive() {
			k++
		}
	}
	return k
}

// rememberedAddrs returns the IP addresses of the peers a peers.json
// names (its multiaddrs' /ip4 parts).
func rememberedAddrs(peersJSON []byte) map[netip.Addr]bool {
	var f struct {
		Peers []struct {
			Addrs []string `json:"addrs"`
		} `json:"peers"`
	}
	out := map[netip.Addr]bool{}
	if json.Unmarshal(peersJSON, &f) != nil {
		return out
	}
	for _, p := range f.Peers {
		for _, a := range p.Addrs {
			if parts := strings.Split(a, "/"); len(parts) > 2 && parts[1] == "ip4" {
				if ip, err := netip.ParseAddr(parts[2]); err == nil {
					out[ip] = true
				}
			}
		}
	}
	return out
}

// victimsSparing picks n of sidecars to kill, spread over the list, but
// never every sidecar that remembered names: the bootstrap-down case that
// follows measures a finder with peers.json and some of its peers alive,
// not one whose every remembered peer is dead (that finder is offline: one
// early run measured an exit, not a find). A remembered sidecar that would
// die is swapped for the next sidecar that is not remembered.
func victimsSparing(sidecars []*proc, n int, remembered map[netip.Addr]bool) []*proc {
	picked := map[int]bool{}
	for i := 0; i < n; i++ {
		picked[(i*len(sidecars))/n] = true
	}
	rem := func(i int) bool { return remembered[sidecars[i].nd.Addr] }
	spare := -1 // a remembered sidecar to take out of picked, while none survives
	for i := range sidecars {
		if rem(i) && !picked[i] {
			spare = -1
			break
		}
		if rem(i) && spare < 0 {
			spare = i
		}
	}
	for j := 1; spare >= 0 && j < len(sidecars); j++ {
		if k := (spare + j) % len(sidecars); !picked[k] && !rem(k) {
			delete(picked, spare)
			picked[k] = true
			break
		}
	}
	var out []*proc
	for i, p := range sidecars {
		if picked[i] {
			out = append(out, p)
		}
	}
	return out
}

// pollRun is one find through a running node's API.
type pollRun struct {
	start, end time.Time
}

// findable runs back-to-back finds of name through the pollers' local APIs
// until one lists p's instance, and returns that find.
func findable(ctx context.Context, p *proc, pollers []*proc, name string) (pollRun, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	got := make(chan pollRun, len(pollers))
	errc := make(chan error, len(pollers))
	for i, q := range pollers {
		go func() {
			cl, err := q.client(ctx)
			if err != nil {
				errc <- err
				return
			}
			// Stagger the pollers so that a find starts every third of one.
			time.Sleep(time.Duration(i) * 40 * time.Millisecond)
			for ctx.Err() == nil {
				fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
				pr := pollRun{start: time.Now()}
				res, err := cl.FindFresh(fctx, name, node.FindOptions{}) // what the network holds, not a cached result
				pr.end = time.Now()
				fcancel()
				if err == nil && len(res.Instances) > 0 {
					got <- pr
					return
				}
			}
			errc <- ctx.Err()
		}()
	}
	var first pollRun
	var errs []error
	for range pollers {
		select {
		case pr := <-got:
			if first.end.IsZero() || pr.end.Before(first.end) {
				first = pr
			}
			cancel() // the others stop at their next find
		case err := <-errc:
			errs = append(errs, err)
		}
	}
	if first.end.IsZero() {
		return first, fmt.Errorf("never found: %v", errs)
	}
	return first, nil
}

// traceNode records the packets to and from a node until untrace.
func (c *cluster) traceNode(idx int) *traceLog {
	tl := &traceLog{}
	c.mu.Lock()
	c.trace[idx] = tl
	c.mu.Unlock()
	return tl
}

func (c *cluster) untrace(idx int) {
	c.mu.Lock()
	delete(c.trace, idx)
	c.mu.Unlock()
}

// firstFrom returns the first packet from node idx that matches f.
func firstFrom(pks []delaynet.Packet, idx int, f func(delaynet.Packet) bool) (time.Time, bool) {
	for _, pk := range pks {
		if pk.From == idx && (f == nil || f(pk)) {
			return pk.Time, true
		}
	}
	return time.Time{}, false
}

func isProbe(pk delaynet.Packet) bool {
	return pk.Proto == 6 && pk.Flags&0x12 == 0x02 && pk.Dst.Port() == servicePort
}

// peersContacted counts the distinct other nodes a node sent DHT traffic
// to (anything but service probes).
func peersContacted(pks []delaynet.Packet, idx int, except ...int) int {
	seen := map[int]bool{}
	for _, pk := range pks {
		if pk.From == idx && pk.To != 0 && !slices.Contains(except, pk.To) &&
			pk.Dst.Port() != servicePort && pk.Src.Port() != servicePort {
			seen[pk.To] = true
		}
	}
	return len(seen)
}

// toward counts the packets of an IP protocol from one node to another.
func toward(pks []delaynet.Packet, from, to int, proto uint8) int {
	k := 0
	for _, pk := range pks {
		if pk.From == from && pk.To == to && pk.Proto == proto {
			k++
		}
	}
	return k
}

// stage is one part of an operation's time, or a count.
type stage struct {
	name  string
	d     time.Duration
	ok    bool // seen in this sample
	count bool // d is a count, not a time
}

func counted(name string, k int) stage {
	return stage{name: name, d: time.Duration(k), ok: true, count: true}
}

// coldBreakdown splits a one-shot find: process start (to its first
// packet), connecting to the bootstrap node (to the "bootstrapped" log line:
// dial, handshake and identify), joining (routing table, refresh and the
// lookup, to the first probe of a service), then probes and exit.
func coldBreakdown(r run, finder, boot *delaynet.Node) []stage {
	first, ok1 := firstFrom(r.packets, finder.Index, nil)
	booted, ok2 := logTime(r.logs, "bootstrapped")
	probe, ok3 := firstFrom(r.packets, finder.Index, isProbe)
	return []stage{
		{name: "process start (to the first packet)", d: first.Sub(r.start), ok: ok1},
		{name: "connect (dial, handshake, identify)", d: booted.Sub(first), ok: ok1 && ok2},
		{name: "routing table, refresh, lookup", d: probe.Sub(booted), ok: ok2 && ok3},
		{name: "probes and exit", d: r.end.Sub(probe), ok: ok3},
		counted("peers sent DHT traffic besides the bootstrap", peersContacted(r.packets, finder.Index, boot.Index)),
		counted("packets to the bootstrap over UDP (QUIC)", toward(r.packets, finder.Index, boot.Index, 17)),
		counted("packets to the bootstrap over TCP", toward(r.packets, finder.Index, boot.Index, 6)),
	}
}

// nodeBreakdown splits a find by a running node: until its first probe of
// a service (the CLI's start and API call, when the CLI made it, then the
// node's lookup), then the probes and the answer.
func nodeBreakdown(r run, nd *delaynet.Node, direct bool) []stage {
	probe, ok := firstFrom(r.packets, nd.Index, func(pk delaynet.Packet) bool { return pk.Time.After(r.start) && isProbe(pk) })
	first := "CLI start, API call, lookup"
	if direct {
		first = "lookup"
	}
	return []stage{
		{name: first, d: probe.Sub(r.start), ok: ok},
		{name: "probes, answer (and CLI exit)", d: r.end.Sub(probe), ok: ok},
		counted("peers sent DHT traffic", peersContacted(r.packets, nd.Index)),
	}
}

// startBreakdown splits start-to-findable: process start (to the first
// packet), connect (to "bootstrapped"), routing table and refresh (to
// "service answers; announcing"), then publish, until the poller's find
// that saw the instance began.
func startBreakdown(p *proc, found pollRun, pks []delaynet.Packet) []stage {
	logs := fileLogs(p.log)
	first, ok1 := firstFrom(pks, p.nd.Index, nil)
	booted, ok2 := logTime(logs, "bootstrapped")
	announcing, ok3 := logTime(logs, "service answers; announcing")
	return []stage{
		{name: "process start (to the first packet)", d: first.Sub(p.start), ok: ok1},
		{name: "connect (dial, handshake, identify)", d: booted.Sub(first), ok: ok1 && ok2},
		{name: "routing table and refresh", d: announcing.Sub(booted), ok: ok2 && ok3},
		{name: "publish, until the find that saw it began", d: found.start.Sub(announcing), ok: ok3},
		{name: "that find", d: found.end.Sub(found.start), ok: true},
	}
}

// otherCell is the k-th cell name, or the next one if that is own.
func otherCell(own string, k int, name func(int) string) string {
	if name(k) == own {
		return name(k + 1)
	}
	return name(k)
}

// apiFind is one find through a running node's local API, made from this
// process, with the node's packets traced.
func (c *cluster) apiFind(ctx context.Context, p *proc, name string) run {
	cl, err := p.client(ctx)
	if err != nil {
		c.tb.Fatal(err)
	}
	tl := c.traceNode(p.nd.Index)
	defer c.untrace(p.nd.Index)
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r := run{start: time.Now()}
	res, err := cl.Find(fctx, name, node.FindOptions{})
	r.end = time.Now()
	if err != nil {
		r.exit = 1
		c.tb.Logf("API find of %s: %v", name, err)
	} else {
		fr := res.FindResult
		for _, si := range res.Instances {
			fr.Instances = append(fr.Instances, si.Instance)
		}
		r.res = &fr
	}
	r.packets = tl.get()
	return r
}
