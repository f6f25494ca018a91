package cli

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/sidecar"
	"github.com/spf13/cobra"
)

func runCmd(e *env) *cobra.Command {
	var nf netFlags
	var name, endpoint, dir, ref, region, mode, delegFile, metricsAddr string
	var check time.Duration
	c := &cobra.Command{
		Use:   "run --endpoint HOST:PORT|unix:PATH [--name ORG/NAME]",
		Short: "Announce a cell's service on the network while it answers",
		Long: `Run starts a node beside a cell's service. It checks the service's endpoint
(TCP connect or unix-socket dial) every few seconds, publishes a signed
60-second instance record while the service answers (republishing every
20 s), and withdraws it as soon as the service stops answering or the node
is stopped (SIGINT, SIGTERM).

Without --name the cell's name comes from Cell.json in --dir; when --dir is
a git repository the record also carries the CID of its HEAD commit. An
endpoint bound to every interface (":9000", "0.0.0.0:9000") is announced at
the addresses the node is known by, public before private.

Other cellnode commands on this machine use the node through its local API
(a unix socket in the state directory).`,
		Example: `  cellnode run --name acme/exchange --endpoint :9000
  cellnode run --dir ./exchange --endpoint unix:/run/cells/exchange.sock --region eu-west
  cellnode run --name acme/exchange --endpoint 127.0.0.1:9000 --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...`,
		Args: exactArgs(0, "no arguments (use --name and --endpoint)"),
		RunE: func(c *cobra.Command, _ []string) error {
			return runCell(c, e, &nf, name, endpoint, dir, ref, region, mode, delegFile, metricsAddr, check)
		},
	}
	nf.add(c.Flags(), true)
	fs := c.Flags()
	fs.StringVar(&name, "name", "", "cell name ORG/NAME (default: the name in Cell.json in --dir)")
	fs.StringVar(&endpoint, "endpoint", "", "the service's endpoint: HOST:PORT, :PORT (all interfaces) or unix:PATH")
	fs.StringVar(&dir, "dir", ".", "the cell's directory (Cell.json, git repository)")
	fs.StringVar(&ref, "ref", "", "the manifest's commit: branch, tag or hash (default HEAD)")
	fs.StringVar(&region, "region", "", "region to announce, e.g. eu-west")
	fs.StringVar(&mode, "dht-mode", "auto", "serve the DHT: auto (when publicly reachable), server or client")
	fs.DurationVar(&check, "check-interval", 2*time.Second, "how often to check the service")
	fs.StringVar(&metricsAddr, "metrics", "", "also serve Prometheus metrics at http://ADDR/metrics (HOST:PORT; the local API serves them too)")
	fs.StringVar(&delegFile, "delegation", "", "a delegation from a publisher key (cellnode key delegate); re-read when it changes")
	return c
}

// runCell checks run's flags and runs sidecar.Run with them, printing the
// node's ID and addresses once the cell is announced.
func runCell(c *cobra.Command, e *env, nf *netFlags, name, endpoint, dir, ref, region, mode, delegFile, metricsAddr string, check time.Duration) error {
	log := e.logger(slog.LevelInfo)
	if endpoint == "" {
		return usageErr("--endpoint is required (HOST:PORT, :PORT or unix:PATH)")
	}
	if _, err := node.ParseEndpoint(endpoint); err != nil {
		return usageErr("%v", err)
	}
	if err := record.CheckRegion(region); err != nil {
		return usageErr("--region: %v", err)
	}
	dm, err := parseMode(mode)
	if err != nil {
		return err
	}
	if err := checkListenFlag(nf.listen); err != nil {
		return err
	}
	cellName, commit, publishers, err := sidecar.Identity(name, dir, ref, log)
	if err != nil {
		return sidecarErr(err)
	}
	var deleg *record.Delegation
	if delegFile != "" {
		if deleg, err = sidecar.ReadDelegation(delegFile); err != nil {
			return usageErr("--delegation: %v", err)
		}
		if len(publishers) > 0 && !slices.ContainsFunc(publishers, func(p ed25519.PublicKey) bool { return p.Equal(deleg.Publisher) }) {
			return usageErr("--delegation is signed by %s, which Cell.json does not list as a publisher", base64.StdEncoding.EncodeToString(deleg.Publisher))
		}
	} else if len(publishers) > 0 {
		log.Warn("Cell.json lists publishers but no --delegation was given: finders that trust them will not show this instance")
	}
	peers, err := nf.peers(c.Context(), log)
	if err != nil {
		return err
	}
	cfg := sidecar.Config{
		Node: node.Config{Home: nf.home, Listen: nf.listen, Bootstrap: peers, Logger: log, Metrics: metricsAddr},
		Announcement: node.Announcement{Name: cellName, Endpoint: endpoint, Region: region, Manifest: commit,
			CheckInterval: check, Delegation: deleg},
		ManifestDir: dir, DelegationFile: delegFile, Offline: nf.offlineByChoice(),
		Running: func(n *node.Node) {
			fmt.Fprintf(e.stdout, "cellnode: running %s as %s; endpoint %s\n", cellName, n.ID(), endpoint)
			for _, addr := range n.Addrs() {
				fmt.Fprintf(e.stdout, "  listening on %s\n", addr)
			}
		},
	}
	cfg.Node.DHT.Mode = dm
	return sidecarErr(sidecar.Run(c.Context(), cfg))
}

// sidecarErr gives a sidecar error its exit code: bad input exits 2, the
// rest 1.
func sidecarErr(err error) error {
	var in *sidecar.InputError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &in):
		return usageErr("%v", err)
	}
	return failErr(err)
}
