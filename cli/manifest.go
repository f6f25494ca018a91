package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
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
		RunE: func(*cobra.Command, []string) error {
			c, err := manifest.CommitCID(dir, ref)
			if err != nil {
				return usageErr("%v", err)
			}
			fmt.Fprintln(e.stdout, c)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", ".", "a directory in the git repository")
	c.Flags().StringVar(&ref, "ref", "HEAD", "the commit: a branch, tag, hash, or REF~N")
	return c
}

func manifestShowCmd(e *env) *cobra.Command {
	var nf netFlags
	var asJSON bool
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "show CID|ORG/NAME",
		Short: "Fetch and print a manifest by commit CID, or those of a cell's live instances",
		Long: `Show fetches a Cell.json from the network (or the local object cache) and
checks every object's hash. With a cell name it finds the live instances and
shows the manifest of each distinct commit they announce, one per commit.`,
		Example: `  cellnode manifest show baf4bcfgqidw7b5cuprjlo5xgvnvveumwpttkc3i
  cellnode manifest show acme/exchange --json`,
		Args: exactArgs(1, "a commit CID or a cell name"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			targets, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			s, err := openSession(ctx, e, &nf, true)
			if err != nil {
				return failErr(err)
			}
			defer s.close()
			var infos []*node.ManifestInfo
			if targets.name == "" {
				info, err := s.manifest(ctx, targets.cid, nil)
				if err != nil {
					return failErr(err)
				}
				infos = append(infos, info)
			} else {
				commits, res, err := cellCommits(ctx, s, targets.name)
				if err != nil {
					return err
				}
				for _, cc := range commits {
					info, err := s.manifest(ctx, cc.cid, node.HintsFor(res, cc.cid))
					if err != nil {
						fmt.Fprintf(e.stderr, "cellnode: manifest %s: %v\n", cc.cid, err)
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
		},
	}
	nf.add(c.Flags(), false)
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return c
}

func cloneCmd(e *env) *cobra.Command {
	var nf netFlags
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "clone CID|ORG/NAME DIR",
		Short: "Clone a cell's repository at a commit from peers",
		Long: `Clone fetches every object reachable from a commit from the nodes that serve
it, checks each object's hash, and writes a normal git repository at DIR with
the commit checked out on branch main. With a cell name it clones the commit
that most live instances announce. DIR must not exist or be empty; a failed
clone leaves nothing behind.`,
		Example: `  cellnode clone baf4bcfgqidw7b5cuprjlo5xgvnvveumwpttkc3i ./exchange
  cellnode clone acme/exchange ./exchange`,
		Args: exactArgs(2, "a commit CID or a cell name, and a directory"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			t, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			s, err := openSession(ctx, e, &nf, false)
			if err != nil {
				return failErr(err)
			}
			defer s.close()
			var hints []peer.ID
			if t.name != "" {
				commits, res, err := cellCommits(ctx, s, t.name)
				if err != nil {
					return err
				}
				t.cid, hints = commits[0].cid, node.HintsFor(res, commits[0].cid)
			}
			if err := s.n.Clone(ctx, t.cid, hints, args[1]); err != nil {
				return failErr(err)
			}
			fmt.Fprintf(e.stdout, "cloned %s into %s\n", t.cid, args[1])
			return nil
		},
	}
	nf.add(c.Flags(), false)
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

type commitCount struct {
	cid       cid.Cid
	instances int
}

// cellCommits finds the live instances of name and returns the distinct
// commits they announce, most announced first.
func cellCommits(ctx context.Context, s *session, name string) ([]commitCount, *node.FindResult, error) {
	res, err := s.find(ctx, name, node.FindOptions{})
	if err != nil {
		return nil, nil, failErr(err)
	}
	counts := map[string]int{}
	for _, in := range res.Instances {
		if in.Manifest != "" {
			counts[in.Manifest]++
		}
	}
	var out []commitCount
	for k, n := range counts {
		if c, err := cid.Decode(k); err == nil {
			out = append(out, commitCount{c, n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].instances != out[j].instances {
			return out[i].instances > out[j].instances
		}
		return out[i].cid.String() < out[j].cid.String()
	})
	if len(out) == 0 {
		if len(res.Instances) == 0 {
			return nil, nil, &exitError{code: ExitFailure, err: fmt.Errorf("no live instance of %s", name)}
		}
		return nil, nil, failErr(fmt.Errorf("%d live instances of %s announce no manifest commit", len(res.Instances), name))
	}
	return out, res, nil
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
