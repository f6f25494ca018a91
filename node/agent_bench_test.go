package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/miekg/dns"
)

// Agent benchmarks, on the loopback network of bench_test.go (25 real
// nodes) plus an agent. See docs/performance.md, "The agent".
//
//	flock /work/.timing.lock go test -run '^$' -bench 'Agent|DNS' -benchtime 20x ./node/

// benchAgent starts an agent on bn, serving its API and DNS, with the
// default background refresh (1 s).
func benchAgent(b *testing.B, bn *benchNet) *Agent {
	b.Helper()
	a, err := NewAgent(AgentConfig{
		Node: Config{Home: sockDir(b), RuntimeDir: sockDir(b), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
			Bootstrap: []peer.AddrInfo{{ID: bn.boot.ID(), Addrs: bn.boot.Host().Addrs()}}, DHT: dht.Config{Mode: dht.ModeServer}},
		API: filepath.Join(sockDir(b), "api.sock"), DNS: "127.0.0.1:0",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Bootstrap(ctx); err != nil {
		b.Fatal(err)
	}
	<-a.Node().DHT().Kad().RefreshRoutingTable()
	return a
}

// watchUntil watches name through cl until cond holds for the set, and
// returns when it did.
func watchUntil(b *testing.B, cl *Client, name string, index uint64, cond func(*WatchResult) bool) (*WatchResult, time.Time) {
	b.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		res, err := cl.Watch(ctx, name, index, time.Minute, FindOptions{})
		at := time.Now()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if cond(res) {
			return res, at
		}
		index = res.Index
	}
}

func has(res *WatchResult, p peer.ID) bool {
	return slices.ContainsFunc(res.Instances, func(in WatchInstance) bool { return in.Peer == p.String() })
}

// BenchmarkAgentWatch: how long a blocked watch on the agent takes to see
// an instance added (from the call to Announce on another node) and
// withdrawn (from the call to Stop), and an instance that dies without a
// withdrawal leave (from the moment finds stop accepting its record,
// Expires + MaxSkew; its records live 3 s here so that it expires soon).
// It also reports what keeping one name fresh costs the agent: GET
// requests sent and instance-protocol bytes per second.
func BenchmarkAgentWatch(b *testing.B) {
	bn := newBenchNet(b)
	a := benchAgent(b, bn)
	cl := dialAgent(b, a)
	const name = "bench/watch"
	b.Run(bn.name(), func(b *testing.B) {
		var added, withdrawn, expired latencies
		res, _ := watchUntil(b, cl, name, 0, func(*WatchResult) bool { return true })
		b.ResetTimer()
		for i := range b.N {
			n := bn.finders[i%len(bn.finders)]
			ln := service(b)
			kill := i%2 == 1
			ann := Announcement{Name: name, Endpoint: ln.Addr().String(), CheckInterval: 50 * time.Millisecond}
			if kill {
				ann.Lifetime, ann.Republish = 3*time.Second, time.Second
			}
			// Changes come at any time, not just after the agent's last
			// find (which is when the previous watch returned): wait a
			// random part of the refresh period first.
			time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
			start := time.Now()
			an, err := n.Announce(ann)
			if err != nil {
				b.Fatal(err)
			}
			var at time.Time
			res, at = watchUntil(b, cl, name, res.Index, func(r *WatchResult) bool { return has(r, n.ID()) })
			added = append(added, at.Sub(start))
			if !kill {
				time.Sleep(time.Duration(rand.Int64N(int64(time.Second))))
				start = time.Now()
				an.Stop(context.Background())
				res, at = watchUntil(b, cl, name, res.Index, func(r *WatchResult) bool { return !has(r, n.ID()) })
				withdrawn = append(withdrawn, at.Sub(start))
				continue
			}
			freeze(n, an)
			_ = os.Remove(localPath(n.cfg.RuntimeDir, n.ID().String(), name))
			dead := an.Status().LastPublish.Add(ann.Lifetime + record.MaxSkew)
			res, at = watchUntil(b, cl, name, res.Index, func(r *WatchResult) bool { return !has(r, n.ID()) })
			expired = append(expired, at.Sub(dead))
		}
		b.StopTimer()
		added.report(b, "added_")
		withdrawn.report(b, "withdrawn_")
		expired.report(b, "expired_")

		// The cost of one watched name with the 3 instances of benchCell.
		w, err := cl.Watch(context.Background(), benchCell, 0, 0, FindOptions{})
		if err != nil {
			b.Fatal(err)
		}
		a.hub.forget(name)
		before := a.Node().DHT().Counters()
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl.Watch(ctx, benchCell, w.Index, 10*time.Second, FindOptions{}) // blocks: keeps the name watched
		cancel()
		after := a.Node().DHT().Counters()
		secs := time.Since(t0).Seconds()
		b.ReportMetric(float64(after["get_sent"]-before["get_sent"])/secs, "gets_sent/s")
		b.ReportMetric(float64(after["bytes_sent"]+after["bytes_received"]-before["bytes_sent"]-before["bytes_received"])/secs, "bytes/s")
	})
}

// BenchmarkDNS: an SRV query to the agent over UDP on loopback, for a
// cell of 3 instances: warm (the agent keeps the name fresh) and cold (the
// agent forgets the name before each query, so the query waits for a
// find; the network stays warm).
func BenchmarkDNS(b *testing.B) {
	bn := newBenchNet(b)
	a := benchAgent(b, bn)
	const qname = "_exchange._tcp.bench.cell."
	c := &dns.Client{Timeout: 10 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(qname, dns.TypeSRV)
	ask := func(b *testing.B) time.Duration {
		start := time.Now()
		r, _, err := c.Exchange(m, a.DNSAddr())
		d := time.Since(start)
		if err != nil || len(r.Answer) != benchInstances {
			b.Fatalf("SRV: %v, %v", r, err)
		}
		return d
	}
	for _, warm := range []bool{true, false} {
		label := "cold"
		if warm {
			label = "warm"
			ask(b)
		}
		b.Run(bn.name()+"/"+label, func(b *testing.B) {
			lat := make(latencies, 0, b.N)
			b.ResetTimer()
			for range b.N {
				if !warm {
					a.hub.forget("bench/exchange")
				}
				lat = append(lat, ask(b))
			}
			b.StopTimer()
			lat.report(b, "")
		})
	}
}

// BenchmarkAgent100Cells runs `cellnode agent` as a process of its own with
// a config directory of 100 cells (and one with none, for the baseline) on
// the loopback network, waits until every cell is announced, measures both
// processes' CPU time and resident memory over 40 s (two republish
// periods), and finds every cell from another node.
func BenchmarkAgent100Cells(b *testing.B) {
	const cells = 100
	bin := filepath.Join(b.TempDir(), "cellnode")
	build := exec.Command("go", "build", "-o", bin, "github.com/cellnode/cellnode/cmd/cellnode")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as deployed (loopback.StaticBuild)
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	bn := newBenchNet(b)
	boot := bn.boot.Addrs()[0]
	start := func(n int) (*exec.Cmd, *Client, peer.ID) {
		dir := b.TempDir()
		var regs []Registration
		for i := range n {
			regs = append(regs, Registration{Name: fmt.Sprintf("many/cell-%03d", i), Endpoint: service(b).Addr().String()})
		}
		bs, _ := json.Marshal(ConfigFile{Cells: regs})
		if err := os.WriteFile(filepath.Join(dir, "cells.json"), bs, 0o644); err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(sockDir(b), "api.sock")
		cmd := exec.Command(bin, "agent", "--config-dir", dir, "--home", sockDir(b), "--api", sock, "--dns", "off",
			"--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", boot, "--dht-mode", "server", "--log-level", "warn")
		cmd.Env = append(os.Environ(), RuntimeDirEnv+"="+sockDir(b))
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		rd := bufio.NewReader(stdout)
		line, _ := rd.ReadString('\n') // "cellnode: agent <peer>"
		id, err := peer.Decode(strings.TrimSpace(strings.TrimPrefix(line, "cellnode: agent ")))
		if err != nil {
			b.Fatalf("agent said %q", line)
		}
		go func() { _, _ = rd.WriteTo(discard{}) }()
		cl, err := DialAPI(sock)
		if err != nil {
			b.Fatal(err)
		}
		return cmd, cl, id
	}
	b.Run(fmt.Sprintf("cells=%d", cells), func(b *testing.B) {
		if b.N > 1 {
			b.Skip("one run measures the whole: use -benchtime 1x")
		}
		full, cl, id := start(cells)
		base, _, _ := start(0)
		t0 := time.Now()
		waitFor(b, "every cell announced and stored", func() bool {
			cs, err := cl.Cells(context.Background())
			if err != nil || len(cs) != cells {
				return false
			}
			for _, c := range cs {
				if !c.Status.Announcing || c.Status.StoredAt == 0 {
					return false
				}
			}
			return true
		})
		b.ReportMetric(time.Since(t0).Seconds(), "s_to_announce_all")
		cpu0, cpuBase0 := cpuTime(b, full.Process.Pid), cpuTime(b, base.Process.Pid)
		w0 := time.Now()
		time.Sleep(40 * time.Second) // a measuring window, not a wait for a condition
		window := time.Since(w0).Seconds()
		cpu := (cpuTime(b, full.Process.Pid) - cpu0).Seconds()
		cpuBase := (cpuTime(b, base.Process.Pid) - cpuBase0).Seconds()
		rss, rssBase := rssKiB(b, full.Process.Pid), rssKiB(b, base.Process.Pid)
		b.ReportMetric(cpu/window*1000, "agent_cpu_ms/s")
		b.ReportMetric(cpuBase/window*1000, "baseline_cpu_ms/s")
		b.ReportMetric((cpu-cpuBase)/window*1000/cells, "cpu_ms/s/cell")
		b.ReportMetric(float64(rss), "agent_rss_KiB")
		b.ReportMetric(float64(rssBase), "baseline_rss_KiB")
		b.ReportMetric(float64(rss-rssBase)/cells, "rss_KiB/cell")
		found := 0
		f := bn.finders[0]
		for i := range cells {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := f.Find(ctx, fmt.Sprintf("many/cell-%03d", i))
			cancel()
			if err == nil && slices.ContainsFunc(res.Instances, func(in Instance) bool { return in.Peer == id.String() && in.Reachable }) {
				found++
			}
		}
		b.ReportMetric(float64(found), "cells_findable")
		if found != cells {
			b.Errorf("%d of %d cells findable", found, cells)
		}
		b.ReportMetric(float64(runtime.NumCPU()), "cpus")
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// cpuTime is a process's user and system CPU time (/proc/PID/stat).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // utime, field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // stime, field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// rssKiB is a process's resident set size (/proc/PID/status VmRSS).
func rssKiB(b *testing.B, pid int) int64 {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
