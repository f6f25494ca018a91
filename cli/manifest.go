package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest/gitobj"
	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/internal/progress"

	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/resolve"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func manifestCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "manifest",
		Short: "Commit CIDs and manifests (Cell.json)",
		Long: `A cell's manifest, Cell.json, is addressed by the CID of the git commit that
holds it: CIDv1, codec git-raw, multihash sha1 of the commit object. Any node
that has the objects can serve them, and the hashes prove them.`,
		Example: `  cellnode manifest cid --ref v1.0.0
  cellnode manifest show acme/exchange`,
	}
	c.AddCommand(manifestCIDCmd(e), manifestShowCmd(e))
	return c
}

func manifestCIDCmd(e *env) *cobra.Command {
	var dir, ref string
	c := &cobra.Command{
		Use:   "cid [--dir DIR] [--ref REF]",
		Short: "Print the CID of a commit of the cell's repository",
		Example: `  cellnode manifest cid
  cellnode manifest cid --dir ./exchange --ref v1.4.0`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error { return manifestCID(e, dir, ref) },
	}
	c.Flags().StringVar(&dir, "dir", ".", "a directory in the git repository")
	c.Flags().StringVar(&ref, "ref", "HEAD", "the commit: a branch, tag, hash, or REF~N")
	return c
}

// trustFlags say whom a command that picks a commit by cell name trusts.
type trustFlags struct {
	publishers []string
	lockFile   string
	untrusted  bool
}

func (f *trustFlags) add(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.publishers, "publisher", nil, "by name, trust only instances this publisher key (hex or base64) delegated; repeatable")
	fs.StringVar(&f.lockFile, "lock", project.LockFile, "by name, trust the publishers this Cell.lock pins for the cell (when --publisher is not given)")
	fs.BoolVar(&f.untrusted, "untrusted", false, "by name with nothing pinned, choose among every live instance: anyone can announce any name, so the commit may be an impostor's")
}

// pins returns the publisher keys trusted for name: --publisher, else what
// the lock file pins.
func (f *trustFlags) pins(name string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, k := range f.publishers {
		pub, err := record.ParsePublicKey(k)
		if err != nil {
			return nil, usageErr("--publisher: %v", err)
		}
		out = append(out, pub)
	}
	if len(out) > 0 {
		return out, nil
	}
	pins, err := lockPins(f.lockFile, name)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	return pins, nil
}

func manifestShowCmd(e *env) *cobra.Command {
	var nf netFlags
	var tf trustFlags
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "show CID|ORG/NAME",
		Short: "Fetch and print a manifest by commit CID, or those of a cell's trusted live instances",
		Long: `Show fetches a Cell.json from the network (or the local object cache) and
checks every object's hash. With a cell name it finds the live instances
that the pinned publishers delegated (--publisher, or ./Cell.lock) and shows
the manifest of each distinct commit they announce, one per commit. Anyone
can announce any name: with nothing pinned, show by name refuses and lists
the commits announced (give --publisher, a commit CID, or --untrusted).`,
		Example: `  cellnode manifest show baf4bcfgqidw7b5cuprjlo5xgvnvveumwpttkc3i
  cellnode manifest show acme/exchange --publisher 7ZQ3p9b7M0h6Jx0t1Zp1cV7pWm4W5lWmN0bcq1kQK6A= --json`,
		Args: exactArgs(1, "a commit CID or a cell name"),
		RunE: func(c *cobra.Command, args []string) error {
			return manifestShow(c, args, e, &nf, &tf, asJSON, timeout)
		},
	}
	nf.add(c.Flags(), false)
	tf.add(c.Flags())
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return c
}

func cloneCmd(e *env) *cobra.Command {
	var nf netFlags
	var tf trustFlags
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "clone CID|ORG/NAME DIR",
		Short: "Clone a cell's repository at a commit from peers",
		Long: `Clone fetches every object reachable from a commit from the nodes that serve
it, checks each object's hash, and writes a normal git repository at DIR with
the commit checked out on branch main. With a cell name it clones the commit
that most live instances delegated by the pinned publishers announce
(--publisher, or ./Cell.lock), after checking that its Cell.json names the
cell and lists one of them. Anyone can announce any name: with nothing
pinned, clone by name refuses and lists the commits announced (give
--publisher, a commit CID, or --untrusted). DIR must not exist or be empty;
a failed clone leaves nothing behind.`,
		Example: `  cellnode clone baf4bcfgqidw7b5cuprjlo5xgvnvveumwpttkc3i ./exchange
  cellnode clone acme/exchange ./exchange --publisher 7ZQ3p9b7M0h6Jx0t1Zp1cV7pWm4W5lWmN0bcq1kQK6A=`,
		Args: exactArgs(2, "a commit CID or a cell name, and a directory"),
		RunE: func(c *cobra.Command, args []string) error { return cloneCommit(c, args, e, &nf, &tf, timeout) },
	}
	nf.add(c.Flags(), false)
	tf.add(c.Flags())
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	return c
}

// target is a commit CID or a cell name.
type target struct {
	cid  cid.Cid
	name string
}

func parseTarget(s string) (target, error) {
	if strings.Contains(s, "/") {
		if err := checkName(s); err != nil {
			return target{}, err
		}
		return target{name: s}, nil
	}
	c, err := manifest.ParseCID(s)
	if err != nil {
		return target{}, usageErr("%v (want a commit CID such as baf4bcf... or a cell name ORG/NAME)", err)
	}
	return target{cid: c}, nil
}

// cellCommits finds the live instances of name and returns the distinct
// commits they announce, most announced first. With pins it counts only the
// instances those publishers delegated; with none it refuses unless
// untrusted is set, listing what is announced so the user can choose a
// commit knowingly.
func cellCommits(ctx context.Context, e *env, s *resolve.Session, name string, pins []ed25519.PublicKey, untrusted bool, cmd string) ([]node.CommitCount, *node.FindResult, error) {
	res, err := s.Find(ctx, name, node.FindOptions{Publishers: pins})
	if err != nil {
		return nil, nil, failErr(err)
	}
	commits := node.Commits(res)
	if len(pins) == 0 && !untrusted {
		var b strings.Builder
		fmt.Fprintf(&b, "nothing pins the publishers of %s, and anyone can announce any name: give --publisher KEY, run where a Cell.lock pins %s, name a commit CID, or pass --untrusted", name, name)
		if len(commits) > 0 {
			b.WriteString("\ncommits announced now (unverified):")
			for _, cc := range commits {
				fmt.Fprintf(&b, "\n  %s  %d instance(s), publishers %s", cc.CID, cc.Instances, describePublishers(cc.Publishers))
			}
		}
		return nil, nil, usageErr("%s %s: %s", cmd, name, b.String())
	}
	if len(pins) == 0 {
		fmt.Fprintf(e.stderr, "cellnode: %s: nothing pinned; choosing among every live instance (--untrusted), which anyone can announce\n", name)
	}
	if len(commits) == 0 {
		switch {
		case len(res.Instances) == 0 && res.Untrusted > 0:
			return nil, nil, &exitError{code: ExitFailure, err: fmt.Errorf("no live instance of %s delegated by the pinned publishers (%d untrusted instance(s) ignored)", name, res.Untrusted)}
		case len(res.Instances) == 0:
			return nil, nil, &exitError{code: ExitFailure, err: fmt.Errorf("no live instance of %s", name)}
		}
		return nil, nil, failErr(fmt.Errorf("%d live instances of %s announce no manifest commit", len(res.Instances), name))
	}
	return commits, res, nil
}

func describePublishers(pubs []string) string {
	out := make([]string, len(pubs))
	for i, p := range pubs {
		if p == "" {
			p = "open"
		}
		out[i] = p
	}
	return strings.Join(out, ", ")
}

func printManifest(w io.Writer, info *node.ManifestInfo) {
	m := info.Manifest
	fmt.Fprintf(w, "%s %s\n", m.Name, dash(m.Version))
	fmt.Fprintf(w, "  commit       %s\n", info.CID)
	if info.Author != "" {
		fmt.Fprintf(w, "  author       %s, %s\n", info.Author, info.Date.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  fingerprint  %s\n", dash(m.Fingerprint))
	fmt.Fprintf(w, "  publishers   %s\n", dash(strings.Join(m.Publishers, ", ")))
	if m.Build != nil {
		fmt.Fprintf(w, "  build        %s\n", strings.Join(m.Build.Command, " "))
	}
}

// cloneCommit clones a commit (by CID, or the one a cell's instances announce) from peers.
func cloneCommit(c *cobra.Command, args []string, e *env, nf *netFlags, tf *trustFlags, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(c.Context(), timeout)
	defer cancel()
	t, err := parseTarget(args[0])
	if err != nil {
		return err
	}
	var pins []ed25519.PublicKey
	if t.name != "" {
		if pins, err = tf.pins(t.name); err != nil {
			return err
		}
	}
	s, err := openSession(ctx, e, nf, false)
	if err != nil {
		return failErr(err)
	}
	defer s.Close()
	var hints []peer.ID
	if t.name != "" {
		commits, res, err := cellCommits(ctx, e, s, t.name, pins, tf.untrusted, "clone")
		if err != nil {
			return err
		}
		cc := commits[0]
		t.cid, hints = cc.CID, node.HintsFor(res, cc.CID)
		info, err := s.ManifestInfo(ctx, t.cid, hints)
		if err == nil {
			err = resolve.CheckManifest(info.Manifest, t.name, pins)
		}
		if err != nil {
			return failErr(fmt.Errorf("commit %s: %w", t.cid, err))
		}
		who := "delegated by a pinned publisher"
		if len(pins) == 0 {
			who = "UNTRUSTED: nothing pinned (--untrusted)"
		}
		fmt.Fprintf(e.stderr, "cellnode: %s: commit %s, announced by %d live instance(s) %s\n", t.name, t.cid, cc.Instances, who)
	}
	bar := progress.Spinner(e.stderr, "cloning "+t.cid.String())
	err = s.Clone(ctx, t.cid, hints, args[1])
	bar.Done()
	if err != nil {
		return failErr(err)
	}
	fmt.Fprintf(e.stdout, "cloned %s into %s\n", t.cid, args[1])
	return nil
}

// manifestShow prints the manifest of a commit or of a cell's instances.
func manifestShow(c *cobra.Command, args []string, e *env, nf *netFlags, tf *trustFlags, asJSON bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(c.Context(), timeout)
	defer cancel()
	targets, err := parseTarget(args[0])
	if err != nil {
		return err
	}
	var pins []ed25519.PublicKey
	if targets.name != "" {
		if pins, err = tf.pins(targets.name); err != nil {
			return err
		}
	}
	s, err := openSession(ctx, e, nf, true)
	if err != nil {
		return failErr(err)
	}
	defer s.Close()
	var infos []*node.ManifestInfo
	if targets.name == "" {
		info, err := s.ManifestInfo(ctx, targets.cid, nil)
		if err != nil {
			return failErr(err)
		}
		infos = append(infos, info)
	} else {
		commits, res, err := cellCommits(ctx, e, s, targets.name, pins, tf.untrusted, "manifest show")
		if err != nil {
			return err
		}
		for _, cc := range commits {
			info, err := s.ManifestInfo(ctx, cc.CID, node.HintsFor(res, cc.CID))
			if err == nil {
				err = resolve.CheckManifest(info.Manifest, targets.name, pins)
			}
			if err != nil {
				fmt.Fprintf(e.stderr, "cellnode: manifest %s: %v\n", cc.CID, err)
				continue
			}
			infos = append(infos, info)
		}
		if len(infos) == 0 {
			return failErr(fmt.Errorf("no manifest of %s could be fetched", targets.name))
		}
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if targets.name == "" {
			return enc.Encode(infos[0])
		}
		return enc.Encode(infos)
	}
	for _, info := range infos {
		printManifest(e.stdout, info)
	}
	return nil
}

// manifestCID prints the CID of the manifest commit in dir.
func manifestCID(e *env, dir string, ref string) error {
	c, err := gitobj.CommitCID(dir, ref)
	if err != nil {
		return usageErr("%v", err)
	}
	fmt.Fprintln(e.stdout, c)
	return nil
}
