package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
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
			cellName, commit, publishers, err := cellIdentity(name, dir, ref, log)
			if err != nil {
				return err
			}
			var deleg *record.Delegation
			if delegFile != "" {
				if deleg, err = readDelegation(delegFile); err != nil {
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
			cfg := node.Config{Home: nf.home, Listen: nf.listen, Bootstrap: peers, API: true, Logger: log, Metrics: metricsAddr}
			cfg.DHT.Mode = dm
			n, err := node.New(cfg)
			if err != nil {
				return failErr(err)
			}
			defer n.Close()
			if commit.Defined() {
				if err := n.ServeManifest(dir, commit); err != nil {
					log.Warn("not serving the manifest commit", "cid", commit, "err", err)
				}
			}
			if nf.offlineByChoice() {
				log.Info("offline by choice (--bootstrap none): the cell is visible on this machine only")
			} else {
				bctx, cancel := context.WithTimeout(c.Context(), 15*time.Second)
				if err := n.Bootstrap(bctx); err != nil {
					log.Warn("offline: the cell is visible on this machine only until a peer answers", "err", err)
				}
				cancel()
			}
			a, err := n.Announce(node.Announcement{Name: cellName, Endpoint: endpoint, Region: region, Manifest: commit,
				CheckInterval: check, Delegation: deleg})
			if err != nil {
				return usageErr("%v", err)
			}
			if delegFile != "" {
				go watchDelegation(c.Context(), delegFile, a, log)
			}
			fmt.Fprintf(e.stdout, "cellnode: running %s as %s; endpoint %s\n", cellName, n.ID(), endpoint)
			for _, addr := range n.Addrs() {
				fmt.Fprintf(e.stdout, "  listening on %s\n", addr)
			}
			<-c.Context().Done()
			log.Info("stopping: withdrawing", "cell", cellName)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.Stop(ctx)
			return nil
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

// cellIdentity works out the cell's name and manifest commit from --name,
// --dir and --ref: a Cell.json in --dir must agree with --name; a git
// repository there gives the commit (HEAD, or --ref), whose own Cell.json
// must name the same cell. Without a repository the record carries no
// commit; an explicit --ref then is an error.
func cellIdentity(name, dir, ref string, log *slog.Logger) (string, cid.Cid, []ed25519.PublicKey, error) {
	name, commit, m, err := cellManifest(name, dir, ref, log)
	if err != nil || m == nil {
		return name, commit, nil, err
	}
	var pubs []ed25519.PublicKey
	for _, p := range m.Publishers {
		k, err := record.ParsePublicKey(p)
		if err != nil {
			return "", cid.Undef, nil, usageErr("Cell.json publishers: %v", err)
		}
		pubs = append(pubs, k)
	}
	return name, commit, pubs, nil
}

// cellManifest is cellIdentity's first half: the name, the commit, and the
// manifest that holds (the committed one when there is a commit).
func cellManifest(name, dir, ref string, log *slog.Logger) (string, cid.Cid, *manifest.Manifest, error) {
	m, err := manifest.Load(dir)
	switch {
	case err == nil:
		if name != "" && name != m.Name {
			return "", cid.Undef, nil, usageErr("--name %s differs from the name %s in %s", name, m.Name, filepath.Join(dir, manifest.FileName))
		}
		name = m.Name
	case errors.Is(err, manifest.ErrNotFound):
		if name == "" {
			return "", cid.Undef, nil, usageErr("no --name given and %v", err)
		}
	default:
		return "", cid.Undef, nil, usageErr("%v", err)
	}
	if err := checkName(name); err != nil {
		return "", cid.Undef, nil, err
	}
	commit, err := gitobj.CommitCID(dir, ref)
	if err != nil {
		if ref == "" && (errors.Is(err, gitobj.ErrNotRepo) || errors.Is(err, gitobj.ErrNoCommits)) {
			return name, cid.Undef, m, nil
		}
		return "", cid.Undef, nil, usageErr("--ref: %v", err)
	}
	at, err := gitobj.AtCommit(dir, commit)
	switch {
	case errors.Is(err, gitobj.ErrNoManifest):
		log.Warn("the commit has no Cell.json at its root; announcing without a manifest", "cid", commit)
		return name, cid.Undef, m, nil
	case err != nil:
		return "", cid.Undef, nil, usageErr("Cell.json at %s: %v", commit, err)
	case at.Name != name:
		return "", cid.Undef, nil, usageErr("the Cell.json committed at %s names %s, not %s", commit, at.Name, name)
	}
	if dirty, derr := gitobj.Dirty(dir); derr == nil && dirty {
		log.Warn("Cell.json has uncommitted changes; the record names the committed manifest", "cid", commit)
	}
	return name, commit, at, nil
}

// watchDelegation re-reads the delegation file every 10 s and hands a
// changed, valid one to the announcer.
func watchDelegation(ctx context.Context, path string, a *node.Announcer, log *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(path); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || !fi.ModTime().After(last) {
			continue
		}
		last = fi.ModTime()
		d, err := readDelegation(path)
		if err == nil {
			err = a.SetDelegation(d)
		}
		if err != nil {
			log.Error("new delegation not used", "file", path, "err", err)
			continue
		}
		log.Info("delegation renewed", "not_after", d.NotAfter)
	}
}
