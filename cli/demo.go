package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
)

func demoCmd(e *env) *cobra.Command {
	var instances int
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run a local network end to end: bootstrap, cells, find, a failure, and exit",
		Long: `Demo runs a whole cell network on this machine, on loopback, in one process,
with real libp2p hosts, the real DHT and signed records: a bootstrap node,
--instances instances of acme/exchange and one of acme/ledger, each a tiny
TCP service with its own node beside it. A separate node then finds
acme/exchange through the DHT and prints the instances ranked by latency;
one exchange service is stopped and the demo shows it leaving the network.
It needs no configuration, touches nothing outside a temporary directory,
and exits on its own.`,
		Example: `  cellnode demo
  cellnode demo --instances 5`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			if instances < 1 || instances > 50 {
				return usageErr("--instances must be between 1 and 50")
			}
			ctx, cancel := context.WithTimeout(c.Context(), 2*time.Minute)
			defer cancel()
			return runDemo(ctx, e, instances)
		},
	}
	c.Flags().IntVar(&instances, "instances", 3, "instances of acme/exchange to start")
	return c
}

func runDemo(ctx context.Context, e *env, instances int) error {
	log := e.logger(slog.LevelError)
	tmp, err := os.MkdirTemp("", "cellnode-demo-*")
	if err != nil {
		return failErr(err)
	}
	defer os.RemoveAll(tmp)
	dir := func(name string) string { return fmt.Sprintf("%s/%s", tmp, name) }
	out := e.stdout
	start := time.Now()

	mk := func(home string, boot []peer.AddrInfo, runtime string, mode dht.Mode) (*node.Node, error) {
		// TCP only: QUIC dials to peers that stop at the same moment wait for
		// a handshake timeout, which would only slow the demo's exit.
		cfg := node.Config{Home: dir(home), Listen: []string{"/ip4/127.0.0.1/tcp/0"},
			Bootstrap: boot, RuntimeDir: runtime, Logger: log}
		cfg.DHT.Mode = mode
		n, err := node.New(cfg)
		if err != nil {
			return nil, err
		}
		if boot != nil {
			if err := n.Bootstrap(ctx); err != nil {
				n.Close()
				return nil, err
			}
		}
		return n, nil
	}
	boot, err := mk("bootstrap", nil, dir("runtime"), dht.ModeServer)
	if err != nil {
		return failErr(err)
	}
	defer boot.Close()
	bootAddrs := []peer.AddrInfo{{ID: boot.ID(), Addrs: boot.Host().Addrs()}}
	fmt.Fprintf(out, "bootstrap node   %s\n", boot.Addrs()[0])

	type cell struct {
		name string
		ln   net.Listener
		n    *node.Node
	}
	var cells []cell
	defer func() { // withdraw and stop in parallel, while the network is still up
		var wg sync.WaitGroup
		for _, c := range cells {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.ln.Close()
				c.n.Close()
			}()
		}
		wg.Wait()
	}()
	names := make([]string, 0, instances+1)
	for range instances {
		names = append(names, "acme/exchange")
	}
	names = append(names, "acme/ledger")
	for i, name := range names {
		ln, err := listenService()
		if err != nil {
			return failErr(err)
		}
		n, err := mk(fmt.Sprintf("cell%d", i), bootAddrs, dir("runtime"), dht.ModeServer)
		if err != nil {
			ln.Close()
			return failErr(err)
		}
		cells = append(cells, cell{name, ln, n})
		if _, err := n.Announce(node.Announcement{Name: name, Endpoint: ln.Addr().String(), Region: "local", CheckInterval: 200 * time.Millisecond}); err != nil {
			return failErr(err)
		}
		fmt.Fprintf(out, "cell %-12s %s  service %s\n", name, shortPeer(n.ID().String()), ln.Addr())
	}

	// The finder has a runtime directory of its own: it learns of the cells
	// through the DHT only.
	finder, err := mk("finder", bootAddrs, dir("finder-runtime"), dht.ModeClient)
	if err != nil {
		return failErr(err)
	}
	defer finder.Close()

	var res *node.FindResult
	t0 := time.Now()
	if err := until(ctx, func() bool {
		res, err = finder.Find(ctx, "acme/exchange")
		return err == nil && len(res.Instances) == instances
	}); err != nil {
		return failErr(fmt.Errorf("demo: the finder did not see all %d instances: %w", instances, err))
	}
	fmt.Fprintf(out, "\n$ cellnode find acme/exchange   (all %d instances visible %v after start)\n", instances, time.Since(t0).Round(time.Millisecond))
	printTable(out, res)

	// Stop one service: its node sees it stop answering and withdraws it.
	victim := cells[0]
	victim.ln.Close()
	t1 := time.Now()
	if err := until(ctx, func() bool {
		res, err = finder.Find(ctx, "acme/exchange")
		return err == nil && len(res.Instances) == instances-1
	}); err != nil {
		return failErr(fmt.Errorf("demo: the stopped instance did not leave: %w", err))
	}
	fmt.Fprintf(out, "\nstopped the service of %s; gone from find after %v\n", shortPeer(victim.n.ID().String()), time.Since(t1).Round(time.Millisecond))
	fmt.Fprintf(out, "\n$ cellnode find acme/exchange\n")
	printTable(out, res)
	fmt.Fprintf(out, "\ndemo done in %v: %d nodes, records signed and verified, 60 s expiry\n", time.Since(start).Round(time.Millisecond), len(cells)+2)
	return nil
}

// listenService starts a tiny TCP service on loopback that accepts and
// closes connections, standing in for a cell.
func listenService() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, nil
}

// until polls cond every 50 ms until it holds or ctx ends.
func until(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("timed out")
		case <-t.C:
		}
	}
	return nil
}
