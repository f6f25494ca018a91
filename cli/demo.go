package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
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
		RunE: func(c *cobra.Command, _ []string) error { return demo(c, e, instances) },
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
	// acme's publisher key delegates each exchange node; an impostor runs
	// one more "acme/exchange" with a key of its own.
	_, publisher, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return failErr(err)
	}
	_, impostorKey, _ := ed25519.GenerateKey(rand.Reader)
	pub := publisher.Public().(ed25519.PublicKey)
	fmt.Fprintf(out, "publisher        %s (acme's key, listed in acme/exchange's Cell.json)\n", base64.StdEncoding.EncodeToString(pub))
	names := make([]string, 0, instances+2)
	for range instances {
		names = append(names, "acme/exchange")
	}
	names = append(names, "acme/ledger", "impostor")
	for i, name := range names {
		signer := publisher
		if name == "impostor" {
			name, signer = "acme/exchange", impostorKey
		}
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
		now := time.Now()
		deleg, err := record.SignDelegation(signer, record.Delegation{Name: name, Node: n.PublicKey(), Issued: now, NotAfter: now.Add(time.Hour)})
		if err != nil {
			return failErr(err)
		}
		if _, err := n.Announce(node.Announcement{Name: name, Endpoint: ln.Addr().String(), Region: "local", CheckInterval: 200 * time.Millisecond, Delegation: deleg}); err != nil {
			return failErr(err)
		}
		role := ""
		if signer.Equal(impostorKey) {
			role = "  (an impostor: delegated by a key of its own)"
		}
		fmt.Fprintf(out, "cell %-13s %s  service %s%s\n", name, shortPeer(n.ID().String()), ln.Addr(), role)
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
		return err == nil && len(res.Instances) == instances+1
	}); err != nil {
		return failErr(fmt.Errorf("demo: the finder did not see all %d instances: %w", instances+1, err))
	}
	fmt.Fprintf(out, "\n$ cellnode find acme/exchange   (nothing pinned: every valid record, grouped by publisher)\n")
	printTable(out, res)
	trust := node.FindOptions{Publishers: []ed25519.PublicKey{pub}}
	if res, err = finder.FindWith(ctx, "acme/exchange", trust); err != nil || len(res.Instances) != instances {
		return failErr(fmt.Errorf("demo: the trusted find saw %v instances: %v", res, err))
	}
	fmt.Fprintf(out, "\n$ cellnode find acme/exchange --publisher %s…   (%v after start)\n", base64.StdEncoding.EncodeToString(pub)[:10], time.Since(t0).Round(time.Millisecond))
	printTable(out, res)
	fmt.Fprintf(out, "(%d untrusted instance hidden: the impostor)\n", res.Untrusted)

	// Stop one service: its node sees it stop answering and withdraws it.
	victim := cells[0]
	victim.ln.Close()
	t1 := time.Now()
	if err := until(ctx, func() bool {
		res, err = finder.FindWith(ctx, "acme/exchange", trust)
		return err == nil && len(res.Instances) == instances-1
	}); err != nil {
		return failErr(fmt.Errorf("demo: the stopped instance did not leave: %w", err))
	}
	fmt.Fprintf(out, "\nstopped the service of %s; gone from find after %v\n", shortPeer(victim.n.ID().String()), time.Since(t1).Round(time.Millisecond))
	fmt.Fprintf(out, "\n$ cellnode find acme/exchange --publisher …\n")
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

// demo runs the demo.
func demo(c *cobra.Command, e *env, instances int) error {
	if instances < 1 || instances > 50 {
		return usageErr("--instances must be between 1 and 50")
	}
	ctx, cancel := context.WithTimeout(c.Context(), 2*time.Minute)
	defer cancel()
	return runDemo(ctx, e, instances)
}
