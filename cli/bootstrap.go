package cli

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/cellnode/cellnode/internal/safefile"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

func bootstrapCmd(e *env) *cobra.Command {
	var home, addrFile, metricsAddr string
	var listen []string
	c := &cobra.Command{
		Use:   "bootstrap",
		Short: "Run a node that only serves the DHT and helps others join",
		Long: `Bootstrap runs a DHT server that announces nothing of its own. New nodes dial
it to join the network; it stores records like any other DHT server and
knows nothing the DHT does not. It prints its full multiaddrs (with
/p2p/<id>) and, with --addr-file, writes them one per line to that file
(written whole, then renamed into place). Stop it with SIGINT or SIGTERM.`,
		Example: `  cellnode bootstrap --listen /ip4/0.0.0.0/tcp/4001 --listen /ip4/0.0.0.0/udp/4001/quic-v1
  cellnode bootstrap --home /var/lib/cellnode --addr-file /run/cellnode/addrs`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			return runBootstrap(c, e, home, addrFile, metricsAddr, listen)
		},
	}
	c.Flags().StringVar(&home, "home", "", "state directory (default $CELLNODE_HOME or ~/.cellnode)")
	c.Flags().StringSliceVar(&listen, "listen", nil, "libp2p listen multiaddr, repeatable (default TCP and QUIC on all interfaces, system-chosen ports)")
	c.Flags().StringVar(&metricsAddr, "metrics", "", "also serve Prometheus metrics at http://ADDR/metrics (HOST:PORT; the local API serves them too)")
	c.Flags().StringVar(&addrFile, "addr-file", "", "write the node's multiaddrs to this file, one per line")
	return c
}

// runBootstrap runs a bootstrap node until the command's context ends.
func runBootstrap(c *cobra.Command, e *env, home string, addrFile string, metricsAddr string, listen []string) error {
	log := e.logger(slog.LevelInfo)
	if err := checkListenFlag(listen); err != nil {
		return err
	}
	cfg := node.Config{Home: home, Listen: listen, API: true, Logger: log, Metrics: metricsAddr}
	cfg.DHT.Mode = dht.ModeServer
	n, err := node.New(cfg)
	if err != nil {
		return failErr(err)
	}
	defer n.Close()
	addrs := n.Addrs()
	for _, a := range addrs {
		fmt.Fprintln(e.stdout, a)
	}
	if addrFile != "" {
		if err := safefile.WriteFile(addrFile, []byte(strings.Join(addrs, "\n")+"\n"), 0o644); err != nil {
			return failErr(fmt.Errorf("write --addr-file: %w", err))
		}
	}
	<-c.Context().Done()
	return nil
}
