package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// reprovideInterval is how often a served commit is provided again; kad-dht
// keeps provider records for 48 h.
const reprovideInterval = 12 * time.Hour

// ServeManifest serves the git objects reachable from commit c of the
// repository containing dir, and provides c in the DHT (again every 12 h,
// and every 30 s until it first succeeds) until the node closes.
func (n *Node) ServeManifest(dir string, c cid.Cid) error {
	h, err := manifest.HashOf(c)
	if err != nil {
		return err
	}
	if err := n.objects.ServeDir(dir, h); err != nil {
		return err
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			go func() {
				select {
				case <-n.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			err := n.dht.Router().Provide(ctx, c, true)
			cancel()
			wait := reprovideInterval
			if err != nil {
				n.log.Debug("provide failed; retrying", "cid", c, "err", err)
				wait = 30 * time.Second
			} else {
				n.log.Debug("provided", "cid", c)
			}
			select {
			case <-n.done:
				return
			case <-time.After(wait):
			}
		}
	}()
	return nil
}

// Manifest fetches the Cell.json of commit c, trying the hinted peers (for
// example the instances that announced c) before the DHT's providers, and
// checking every object's hash.
func (n *Node) Manifest(ctx context.Context, c cid.Cid, hints []peer.ID) (*manifest.Manifest, *object.Commit, error) {
	return n.fetcher.Manifest(ctx, c, hints)
}

// Clone fetches every object reachable from commit c and writes a git
// repository with c checked out at dir (see gitobj.Fetcher.Clone).
func (n *Node) Clone(ctx context.Context, c cid.Cid, hints []peer.ID, dir string) error {
	return n.fetcher.Clone(ctx, c, hints, dir)
}

// HintsFor returns the peers of the instances in res that announced c;
// when res is pinned, only those of trusted instances.
func HintsFor(res *FindResult, c cid.Cid) []peer.ID {
	var out []peer.ID
	for _, in := range res.Instances {
		if res.Pinned && !in.Trusted {
			continue
		}
		if in.Manifest == c.String() {
			if id, err := peer.Decode(in.Peer); err == nil {
				out = append(out, id)
			}
		}
	}
	return out
}

// ManifestInfo is a fetched manifest with the commit it came from.
type ManifestInfo struct {
	CID      string             `json:"cid"`
	Manifest *manifest.Manifest `json:"manifest"`
	Author   string             `json:"author,omitempty"`
	Date     time.Time          `json:"date,omitzero"`
	Message  string             `json:"message,omitempty"`
}

// ManifestInfo fetches the manifest of c and describes it.
func (n *Node) ManifestInfo(ctx context.Context, c cid.Cid, hints []peer.ID) (*ManifestInfo, error) {
	m, commit, err := n.Manifest(ctx, c, hints)
	if err != nil {
		return nil, err
	}
	return &ManifestInfo{CID: c.String(), Manifest: m, Author: fmt.Sprintf("%s <%s>", commit.Author.Name, commit.Author.Email),
		Date: commit.Author.When, Message: commit.Message}, nil
}

// CommitCount is a commit and the instances of a find that announce it.
type CommitCount struct {
	CID        cid.Cid
	Instances  int
	Publishers []string // base64 keys that delegated them, sorted; "" for open records
}

// Commits returns the distinct commits that the instances of res announce,
// most announced first (ties by CID). When res is pinned only trusted
// instances count, so a commit that only untrusted instances announce is
// never among them.
func Commits(res *FindResult) []CommitCount {
	idx := map[string]int{}
	var out []CommitCount
	for _, in := range res.Instances {
		if in.Manifest == "" || (res.Pinned && !in.Trusted) {
			continue
		}
		c, err := cid.Decode(in.Manifest)
		if err != nil {
			continue
		}
		i, ok := idx[in.Manifest]
		if !ok {
			i = len(out)
			idx[in.Manifest] = i
			out = append(out, CommitCount{CID: c})
		}
		out[i].Instances++
		if !slices.Contains(out[i].Publishers, in.Publisher) {
			out[i].Publishers = append(out[i].Publishers, in.Publisher)
			slices.Sort(out[i].Publishers)
		}
	}
	slices.SortFunc(out, func(a, b CommitCount) int {
		if a.Instances != b.Instances {
			return b.Instances - a.Instances
		}
		return strings.Compare(a.CID.String(), b.CID.String())
	})
	return out
}
