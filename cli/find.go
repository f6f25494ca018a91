package cli

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/resolve"
	"github.com/spf13/cobra"
)

func findCmd(e *env) *cobra.Command {
	var nf netFlags
	var asJSON bool
	var timeout time.Duration
	var fingerprint, version string
	var publishers []string
	var all bool
	var lockFile string
	c := &cobra.Command{
		Use:   "find ORG/NAME",
		Short: "List the live instances of a cell, fastest first",
		Long: `Find returns every live, verified instance of a cell: it looks the name up in
the DHT (through the node running on this machine when there is one, else
through a short-lived node of its own), pings every endpoint in parallel
(500 ms timeout) and lists reachable instances by measured latency, then the
unreachable ones, marked.

With no network it lists the cells running on this machine and says so.
--fingerprint and --version fetch the manifest of each distinct commit the
instances announce (from those instances, checking every hash) and keep only
compatible instances; instances that announce no manifest are left out.

Trust: with --publisher KEY, or in a directory whose Cell.lock pins the cell's
publishers, only instances delegated by those keys are shown; the others are counted, and --all lists them
marked UNTRUSTED. With no --publisher, instances are grouped by publisher and
nothing is verified against a manifest you trust.

Exit status: 0 when an instance is found, 1 when none is, 2 for bad input.`,
		Example: `  cellnode find acme/exchange
  cellnode find acme/exchange --json --timeout 5s
  cellnode find acme/exchange --publisher 7ZQ3p9b7M0h6Jx0t1Zp1cV7pWm4W5lWmN0bcq1kQK6A=
  cellnode find acme/exchange --fingerprint 9f2c44d1a07be311 --version '^1.4'
  cellnode find acme/exchange --bootstrap /ip4/203.0.113.9/tcp/4001/p2p/12D3KooW...`,
		Args: exactArgs(1, "one cell name (ORG/NAME)"),
		RunE: func(c *cobra.Command, args []string) error {
			return findCell(c, args, e, &nf, asJSON, timeout, fingerprint, version, publishers, all, lockFile)
		},
	}
	nf.add(c.Flags(), false)
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up after this long")
	c.Flags().StringSliceVar(&publishers, "publisher", nil, "trust this publisher key (hex or base64), repeatable; only its instances are shown")
	c.Flags().BoolVar(&all, "all", false, "with --publisher, also list untrusted instances, marked")
	c.Flags().StringVar(&lockFile, "lock", project.LockFile, "trust the publishers this Cell.lock pins for the cell (when it exists and --publisher is not given)")
	c.Flags().StringVar(&fingerprint, "fingerprint", "", "keep only instances whose manifest has this schema fingerprint (hex)")
	c.Flags().StringVar(&version, "version", "", "keep only instances whose manifest version matches: 1.2.3, or a range such as '>=1.2, <2'")
	return c
}

// find runs a find through a session, and keeps only the instances whose
// manifest matches the filter when one is given. Each instance carries its
// signed record. The caller calls done, which closes the session, once it
// has printed the answer: in a process about to exit, the short way
// (env.exiting).
func find(ctx context.Context, e *env, nf *netFlags, name string, opts node.FindOptions, filt resolve.Filter) (_ *node.FindReply, done func(), _ error) {
	s, err := openSession(ctx, e, nf, true)
	if err != nil {
		return nil, func() {}, err
	}
	done = s.Close
	if e.exiting {
		done = s.CloseAtExit
	}
	reply, err := s.FindMatching(ctx, name, opts, filt)
	return reply, done, err
}

func printTable(w io.Writer, res *node.FindResult) {
	ins := res.Instances
	if !res.Pinned { // group by publisher, keeping the latency order within each
		ins = append([]node.Instance(nil), ins...)
		sort.SliceStable(ins, func(i, j int) bool { return ins[i].Publisher < ins[j].Publisher })
	}
	bw := bufio.NewWriter(w) // the tabwriter writes cell by cell: one write(2) for the table, not one per cell
	defer bw.Flush()
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tENDPOINT\tLATENCY\tREGION\tMANIFEST\tPUBLISHER\tEXPIRES")
	for _, in := range ins {
		ep, lat := in.Best, fmt.Sprintf("%.2f ms", in.LatencyMS)
		if !in.Reachable {
			ep, lat = strings.Join(in.Endpoints, ","), "unreachable"
		}
		pub := "open (unverified)"
		if in.Publisher != "" {
			pub = in.Publisher[:10] + "…"
		}
		if res.Pinned && !in.Trusted {
			pub = "UNTRUSTED " + pub
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", shortPeer(in.Peer), ep, lat, dash(in.Region), dash(shortCID(in.Manifest)),
			pub, fmtAge(time.Until(in.Expires)))
	}
	tw.Flush()
	if len(res.ShardsUnanswered) > 0 {
		fmt.Fprintf(w, "(no storer answered for shards %v of %d: their instances may be missing)\n", res.ShardsUnanswered, res.Shards)
	}
	if n := total(res.Rejected); n > 0 {
		fmt.Fprintf(w, "(%d invalid records dropped: %v)\n", n, res.Rejected)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func shortPeer(p string) string {
	if len(p) > 16 {
		return p[:8] + "…" + p[len(p)-6:]
	}
	return p
}

func shortCID(c string) string {
	if len(c) > 20 {
		return c[:12] + "…" + c[len(c)-6:]
	}
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lockPins returns the publisher keys that the lock file at path pins for
// the cell name; a missing file pins nothing.
func lockPins(path, name string) ([]ed25519.PublicKey, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, nil
	}
	lock, err := project.LoadLock(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	var out []ed25519.PublicKey
	for _, c := range lock.Cells {
		if c.Cell != name {
			continue
		}
		for _, p := range c.Publishers {
			k, err := record.ParsePublicKey(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// findCell finds the cell args[0] and prints its instances.
func findCell(c *cobra.Command, args []string, e *env, nf *netFlags, asJSON bool, timeout time.Duration, fingerprint string, version string, publishers []string, all bool, lockFile string) error {
	if err := checkName(args[0]); err != nil {
		return err
	}
	if timeout <= 0 {
		return usageErr("--timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(c.Context(), timeout)
	defer cancel()
	filt, err := resolve.NewFilter(fingerprint, version)
	if err != nil {
		return usageErr("%v", err)
	}
	opts := node.FindOptions{All: all}
	for _, k := range publishers {
		pub, err := record.ParsePublicKey(k)
		if err != nil {
			return usageErr("--publisher: %v", err)
		}
		opts.Publishers = append(opts.Publishers, pub)
	}
	if len(publishers) == 0 {
		pins, err := lockPins(lockFile, args[0])
		if err != nil {
			return usageErr("%v", err)
		}
		opts.Publishers = pins
	}
	res, done, err := find(ctx, e, nf, args[0], opts, filt)
	defer done() // after the answer is printed
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.Context().Err() == nil {
		return failErr(fmt.Errorf("find %s: timed out after %v (raise --timeout); not listing a partial answer", args[0], timeout))
	}
	if err != nil {
		return failErr(err)
	}
	if res.Offline {
		fmt.Fprintln(e.stderr, offlineNote(nf, res.OfflineReason))
	}
	switch {
	case !res.Pinned && len(res.Instances) > 0:
		fmt.Fprintln(e.stderr, "cellnode: nothing is pinned: these instances are grouped by the publisher that delegated them, and none is verified against a manifest you trust (use --publisher, or a Cell.lock)")
	case res.Untrusted > 0 && !all:
		fmt.Fprintf(e.stderr, "cellnode: %d untrusted instances not shown (--all lists them)\n", res.Untrusted)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printTable(e.stdout, res.Result())
	}
	if len(res.Instances) == 0 {
		if !asJSON {
			fmt.Fprintf(e.stderr, "cellnode: no live instance of %s\n", args[0])
		}
		return silentExit(ExitFailure)
	}
	return nil
}
