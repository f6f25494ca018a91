package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/celldns"
	"github.com/spf13/cobra"
)

func agentCmd(e *env) *cobra.Command {
	var nf netFlags
	var cfg node.AgentConfig
	var mode, dnsAddr string
	c := &cobra.Command{
		Use:   "agent [--config-dir DIR] [--api PATH] [--api-tcp ADDR] [--dns ADDR|off]",
		Short: "Run this machine's agent: many cells, watches, DNS and the local API for every service",
		Long: `Agent runs one node for the whole machine, as a Consul agent does. It
announces nothing of its own: it announces the cells registered through its
API (PUT /v1/cells/ORG/NAME) or defined in --config-dir (read at start and on
SIGHUP), keeps the names services watch fresh (GET /v1/watch), and answers
DNS for cells on a loopback address:

  _exchange._tcp.acme.cell  SRV    exchange.acme.cell  A/AAAA

The API is served on a shared unix socket ($CELLNODE_API, default
$CELLNODE_RUNTIME_DIR/api.sock, mode 0666 or 0660 with --api-group) where
every user may read and only the agent's user and root may write, on the
owner's socket (--home/api.sock, 0600), and, with --api-tcp, read-only on a
loopback TCP address. See docs/api.md and docs/using.md.`,
		Example: `  cellnode agent --config-dir /etc/cellnode/cells.d
  CELLNODE_RUNTIME_DIR=/run/cellnode cellnode agent --api-group cellnode --api-tcp 127.0.0.1:8640
  cellnode agent --dns 127.0.0.1:5353 --bootstrap /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW...`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error { return runAgent(c, e, &nf, cfg, mode, dnsAddr) },
	}
	nf.add(c.Flags(), true)
	fs := c.Flags()
	fs.StringVar(&mode, "dht-mode", "auto", "serve the DHT: auto (the LAN DHT always; the WAN DHT when publicly reachable), server or client")
	fs.StringVar(&cfg.ConfigDir, "config-dir", "", "directory of *.json cell definitions and trust settings, read at start and on SIGHUP")
	fs.StringVar(&cfg.API, "api", "", "shared API socket (default $CELLNODE_API, else $CELLNODE_RUNTIME_DIR/api.sock)")
	fs.StringVar(&cfg.APIGroup, "api-group", "", "give the shared socket to this group, mode 0660 (default: mode 0666)")
	fs.StringVar(&cfg.APITCP, "api-tcp", "", "also serve the API read-only on this loopback address, e.g. 127.0.0.1:8640")
	fs.StringVar(&dnsAddr, "dns", celldns.DefaultAddr, "loopback address for DNS (udp and tcp), or off")
	fs.DurationVar(&cfg.DNSMaxTTL, "dns-ttl", 5*time.Second, "largest DNS TTL (never more than a record's remaining life)")
	return c
}

// runAgent runs the machine's agent until the command's context ends.
func runAgent(c *cobra.Command, e *env, nf *netFlags, cfg node.AgentConfig, mode string, dnsAddr string) error {
	log := e.logger(slog.LevelInfo)
	dm, err := parseMode(mode)
	if err != nil {
		return err
	}
	switch dnsAddr {
	case "off", "none":
		cfg.NoDNS = true
	default:
		cfg.DNS = dnsAddr
	}
	peers, err := nf.peers(c.Context(), log)
	if err != nil {
		return err
	}
	cfg.Node = node.Config{Home: nf.home, Listen: nf.listen, Bootstrap: peers, Logger: log}
	cfg.Node.DHT.Mode = dm
	// SIGHUP must not kill the agent, even before it is up.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := node.NewAgent(cfg)
	if errors.Is(err, node.ErrConfig) {
		return usageErr("%v", err)
	}
	if err != nil {
		return failErr(err)
	}
	defer a.Close()
	bctx, cancel := context.WithTimeout(c.Context(), 15*time.Second)
	if err := a.Bootstrap(bctx); err != nil {
		log.Warn("offline: cells are visible on this machine only until a peer answers", "err", err)
	}
	cancel()
	fmt.Fprintf(e.stdout, "cellnode: agent %s\n", a.Node().ID())
	fmt.Fprintf(e.stdout, "  api      unix:%s (read: everyone; write: uid %d and root)\n", a.APIAddr(), os.Getuid())
	if addr := a.APITCPAddr(); addr != "" {
		fmt.Fprintf(e.stdout, "  api      http://%s (read-only)\n", addr)
	}
	if addr := a.DNSAddr(); addr != "" {
		fmt.Fprintf(e.stdout, "  dns      %s (udp, tcp; zone %s)\n", addr, celldns.Zone)
	}
	fmt.Fprintf(e.stdout, "  cells    %d registered\n", len(a.Cells()))
	for _, addr := range a.Node().Addrs() {
		fmt.Fprintf(e.stdout, "  listening on %s\n", addr)
	}
	for {
		select {
		case <-c.Context().Done():
			log.Info("stopping: withdrawing every cell")
			return nil
		case <-hup:
			if cfg.ConfigDir == "" {
				log.Warn("SIGHUP: no --config-dir to read")
				continue
			}
			res, err := a.Reload(c.Context())
			if err != nil {
				log.Error("config directory not reloaded; nothing changed", "err", err)
				continue
			}
			log.Info("config directory reloaded", "result", res.String())
		}
	}
}
