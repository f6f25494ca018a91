package netbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cellnode/cellnode/internal/delaynet"
)

// diagnose describes the state of the network when a phase fails, so that
// the failure explains itself: the switch's counters, the bootstrap node's
// status, and for each given namespace its neighbour table, its sockets
// and the kernel's non-zero IP, TCP and UDP counters.
func (c *cluster) diagnose(ctx context.Context, boot *proc, nds ...*delaynet.Node) string {
	var b strings.Builder
	st := c.net.Stats()
	fmt.Fprintf(&b, "switch: %d frames, %d bytes, %d flooded, %d ARP answered, %d dropped, %d oversize, %d errors, %d over 1 ms late, %d over 5 ms, max late %v\n",
		st.Frames, st.Bytes, st.Flooded, st.ARP, st.Dropped, st.Oversize, st.Errors, st.Late, st.Late5, st.MaxLate)
	if b0, err := os.ReadFile("/proc/net/stat/arp_cache"); err == nil {
		// One line per CPU; entries is global, table_fulls per CPU.
		fmt.Fprintf(&b, "kernel ARP table (all namespaces; gc_thresh3 %s):\n%s", strings.TrimSpace(readFile("/proc/sys/net/ipv4/neigh/default/gc_thresh3")), b0)
	}
	if boot != nil {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cl, err := boot.client(sctx)
		if err == nil {
			s, err2 := cl.Status(sctx)
			if err2 == nil {
				j, _ := json.Marshal(s)
				fmt.Fprintf(&b, "bootstrap status: %s\n", j)
			} else {
				err = err2
			}
		}
		if err != nil {
			fmt.Fprintf(&b, "bootstrap status: %v\n", err)
		}
		cancel()
	}
	for _, nd := range nds {
		fmt.Fprintf(&b, "--- %s (%s)\n", nd.NS, nd.Addr)
		for _, args := range [][]string{
			{"ip", "-n", nd.NS, "neigh"},
			{"ip", "netns", "exec", nd.NS, "ss", "-s"},
			{"ip", "netns", "exec", nd.NS, "ss", "-tanu"},
			{"ip", "netns", "exec", nd.NS, "nstat", "-asz"},
		} {
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			s := string(out)
			if args[len(args)-1] == "-asz" {
				s = nonzero(s)
			}
			if len(s) > 4000 {
				s = s[:4000] + "…\n"
			}
			fmt.Fprintf(&b, "$ %s (%v)\n%s", strings.Join(args[3:], " "), err, s)
		}
	}
	return b.String()
}

// nonzero keeps the lines of nstat's output whose counter is not zero.
func nonzero(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] != "0" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

// packetSummary counts a trace's packets by direction and protocol and
// lists the first and last few.
func packetSummary(pks []delaynet.Packet, idx int, since time.Time) string {
	count := map[string]int{}
	for _, pk := range pks {
		count[fmt.Sprintf("%d->%d proto %d", pk.From, pk.To, pk.Proto)]++
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "packets of node %d: %d\n", idx, len(pks))
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %d\n", k, count[k])
	}
	show := func(pk delaynet.Packet) {
		fmt.Fprintf(&b, "  +%8.1fms %d->%d len %4d proto %2d flags %#02x %v -> %v\n",
			float64(pk.Time.Sub(since))/1e6, pk.From, pk.To, pk.Len, pk.Proto, pk.Flags, pk.Src, pk.Dst)
	}
	for i, pk := range pks {
		if i < 60 || i >= len(pks)-20 {
			show(pk)
		} else if i == 60 {
			b.WriteString("  …\n")
		}
	}
	return b.String()
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// arpTableFulls sums the kernel's count of neighbour allocations refused
// because the ARP table, shared by all namespaces, was full
// (/proc/net/stat/arp_cache, table_fulls, one line per CPU).
func arpTableFulls() uint64 {
	lines := strings.Split(strings.TrimSpace(readFile("/proc/net/stat/arp_cache")), "\n")
	if len(lines) < 2 {
		return 0
	}
	col := slices.Index(strings.Fields(lines[0]), "table_fulls")
	var sum uint64
	for _, l := range lines[1:] {
		if f := strings.Fields(l); col >= 0 && col < len(f) {
			v, _ := strconv.ParseUint(f[col], 16, 64)
			sum += v
		}
	}
	return sum
}

// writeTimeline writes, for a kept run, when a traced node first sent to
// each other node and how many packets went each way, relative to start,
// and its log lines: where an operation's time went, peer by peer.
func writeTimeline(path string, pks []delaynet.Packet, idx int, start time.Time, logs []logLine) {
	type peerLine struct {
		first, last time.Time
		out, in     int
		udp, tcp    int
	}
	peers := map[int]*peerLine{}
	var order []int
	for _, pk := range pks {
		other := pk.To
		if pk.To == idx {
			other = pk.From
		}
		if other == idx || other == 0 {
			continue
		}
		pl := peers[other]
		if pl == nil {
			pl = &peerLine{first: pk.Time}
			peers[other] = pl
			order = append(order, other)
		}
		pl.last = pk.Time
		if pk.From == idx {
			pl.out++
		} else {
			pl.in++
		}
		switch pk.Proto {
		case 17:
			pl.udp++
		case 6:
			pl.tcp++
		}
	}
	var b strings.Builder
	at := func(t time.Time) float64 { return float64(t.Sub(start)) / 1e6 }
	for _, l := range logs {
		fmt.Fprintf(&b, "+%8.1fms log %s\n", at(l.time), l.msg)
	}
	for _, o := range order {
		pl := peers[o]
		fmt.Fprintf(&b, "+%8.1fms peer %2d: %3d out, %3d in (%d UDP, %d TCP), last +%.1fms\n", at(pl.first), o, pl.out, pl.in, pl.udp, pl.tcp, at(pl.last))
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o600)
	// Every packet of the node beside it, for reading a handshake round
	// trip by round trip: time, direction, peer, protocol, length, flags.
	var pb strings.Builder
	for _, pk := range pks {
		dir, other := ">", pk.To
		if pk.To == idx {
			dir, other = "<", pk.From
		}
		if other == idx || other == 0 {
			continue
		}
		fmt.Fprintf(&pb, "+%8.1fms %s peer %2d proto %2d len %5d flags %#02x\n", at(pk.Time), dir, other, pk.Proto, pk.Len, pk.Flags)
	}
	_ = os.WriteFile(strings.TrimSuffix(path, ".timeline")+".packets", []byte(pb.String()), 0o600)
}

// cpu returns the CPU time (user and system) the cluster's cellnode
// processes have used so far: the running ones from /proc, the exited ones
// from their rusage. One-shot commands are not counted.
func (c *cluster) cpu() time.Duration {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	var sum time.Duration
	for _, p := range procs {
		if !p.alive() {
			if ps := p.cmd.ProcessState; ps != nil {
				sum += ps.UserTime() + ps.SystemTime()
			}
			continue
		}
		f := strings.Fields(readFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)))
		if len(f) < 15 {
			continue
		}
		// utime and stime, fields 14 and 15, in clock ticks (100 a second on Linux).
		u, _ := strconv.ParseUint(f[13], 10, 64)
		st, _ := strconv.ParseUint(f[14], 10, 64)
		sum += time.Duration(u+st) * 10 * time.Millisecond
	}
	return sum
}
