package cli

import (
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/node"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// offlineByChoice reports whether the bootstrap list in effect is "none"
// (from --bootstrap or $CELLNODE_BOOTSTRAP): the node then dials nobody,
// not even the peers it saw before.
func (f *netFlags) offlineByChoice() bool {
	l, err := bootstrap.Select(f.bootstrap, os.Getenv(bootstrap.EnvVar))
	return err == nil && l.Source == bootstrap.SourceNone
}

// offlineNote is what find says when it saw no network.
func offlineNote(f *netFlags, reason string) string {
	if f.offlineByChoice() {
		home := f.home
		if home == "" {
			home = dirs.Home()
		}
		// Through a running node, the node's own bootstrap list counts.
		if _, err := node.Dial(home); len(f.bootstrap) > 0 || err != nil {
			src := "--bootstrap none"
			if len(f.bootstrap) == 0 {
				src = bootstrap.EnvVar + "=none"
			}
			return "cellnode: offline by choice (" + src + "): showing cells on this machine only"
		}
	}
	if reason != "" {
		reason = " (" + reason + ")"
	}
	return "cellnode: offline: no peer of the cell network answered" + reason + "; showing cells on this machine only"
}

// checkPeerAddrs refuses, as bad input, a bootstrap address given on the
// command line or in the environment that names no peer
// (/ip4/…/tcp/4001 without /p2p/<id>); /dnsaddr names are resolved later.
func checkPeerAddrs(l bootstrap.List) error {
	if l.Source != bootstrap.SourceFlag && l.Source != bootstrap.SourceEnv {
		return nil
	}
	where := "--bootstrap"
	if l.Source == bootstrap.SourceEnv {
		where = "$" + bootstrap.EnvVar
	}
	for _, a := range l.Addrs {
		if len(a) > 0 && a[0].Protocol().Code == ma.P_DNSADDR {
			continue
		}
		if tr, id := peer.SplitAddr(a); id == "" || len(tr) == 0 {
			return usageErr("%s %s: no peer ID: want <transport>/p2p/<peer-id>, e.g. /ip4/203.0.113.9/tcp/4001/p2p/12D3KooW…", where, a)
		}
	}
	return nil
}

// logResolveFailure says, on one line, that some bootstrap addresses did
// not resolve. The default list failing (no DNS, or cell.network
// unreachable from here) is routine for a machine on a private network:
// the peers seen before are tried next, and a command that ends up
// offline says so; it is logged at info, which one-shot commands do not
// show. A list the operator gave is worth a warning.
func logResolveFailure(log *slog.Logger, l bootstrap.List, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	if l.Source == bootstrap.SourceDefault {
		log.Info("the default bootstrap "+bootstrap.DefaultAddr+" did not resolve; trying the peers seen before", "err", msg)
		return
	}
	what := "some bootstrap addresses did not resolve"
	if errors.Is(err, bootstrap.ErrNoPeers) {
		what = "no bootstrap address resolved; trying the peers seen before"
	}
	log.Warn(what, "source", l.Source, "err", msg)
}

// checkListenFlag checks --listen values before a node starts, as bad
// input (exit 2).
func checkListenFlag(addrs []string) error {
	if err := node.CheckListen(addrs); err != nil {
		return usageErr("--listen: %v", err)
	}
	return nil
}
