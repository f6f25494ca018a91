package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

func findCmd(e *env) *cobra.Command {
	var nf netFlags
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "find ORG/NAME",
		Short: "List the live instances of a cell, fastest first",
		Long: `Find returns every live, verified instance of a cell: it looks the name up in
the DHT (through the node running on this machine when there is one, else
through a short-lived node of its own), pings every endpoint in parallel
(500 ms timeout) and lists reachable instances by measured latency, then the
unreachable ones, marked.

With no network it lists the cells running on this machine and says so.
Exit status: 0 when an instance is found, 1 when none is, 2 for bad input.`,
		Example: `  cellnode find acme/exchange
  cellnode find acme/exchange --json --timeout 5s
  cellnode find acme/exchange --bootstrap /ip4/203.0.113.9/tcp/4001/p2p/12D3KooW...`,
		Args: exactArgs(1, "one cell name (ORG/NAME)"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkName(args[0]); err != nil {
				return err
			}
			if timeout <= 0 {
				return usageErr("--timeout must be positive")
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			res, err := find(ctx, e, &nf, args[0])
			if err != nil {
				return failErr(err)
			}
			if res.Offline {
				fmt.Fprintln(e.stderr, "cellnode: offline: no peer of the cell network answered; showing cells on this machine only")
			}
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printTable(e.stdout, res)
			}
			if len(res.Instances) == 0 {
				if !asJSON {
					fmt.Fprintf(e.stderr, "cellnode: no live instance of %s\n", args[0])
				}
				return silentExit(ExitFailure)
			}
			return nil
		},
	}
	nf.add(c.Flags(), false)
	c.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	c.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up after this long")
	return c
}

// find asks the local node when one runs with this home, else starts an
// ephemeral DHT client.
func find(ctx context.Context, e *env, nf *netFlags, name string) (*node.FindResult, error) {
	home := nf.home
	if home == "" {
		home = node.DefaultHome()
	}
	if len(nf.bootstrap) == 0 {
		if cl, err := node.Dial(home); err == nil {
			return cl.Find(ctx, name)
		}
	}
	log := e.logger(slog.LevelWarn)
	peers, err := nf.peers(ctx, log)
	if err != nil {
		return nil, err
	}
	n, err := node.New(node.Config{
		Home: home, Ephemeral: true, Bootstrap: peers, Logger: log,
		Listen: []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"},
		DHT:    dht.Config{Mode: dht.ModeClient},
	})
	if err != nil {
		return nil, err
	}
	defer n.Close()
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = n.Bootstrap(bctx)
	cancel()
	if err != nil && !errors.Is(err, node.ErrOffline) {
		return nil, err
	}
	if err != nil {
		log.Debug("bootstrap", "err", err)
	}
	return n.Find(ctx, name)
}

func printTable(w io.Writer, res *node.FindResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tENDPOINT\tLATENCY\tREGION\tMANIFEST\tEXPIRES")
	for _, in := range res.Instances {
		ep, lat := in.Best, fmt.Sprintf("%.2f ms", in.LatencyMS)
		if !in.Reachable {
			ep, lat = strings.Join(in.Endpoints, ","), "unreachable"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", shortPeer(in.Peer), ep, lat, dash(in.Region), dash(shortCID(in.Manifest)),
			fmtAge(time.Until(in.Expires)))
	}
	tw.Flush()
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
