package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/node/resolve"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/pflag"
)

// netFlags are the flags every command that joins the network has.
type netFlags struct {
	home      string
	bootstrap []string
	listen    []string
}

func (f *netFlags) add(fs *pflag.FlagSet, listen bool) {
	fs.StringVar(&f.home, "home", "", "state directory (default $CELLNODE_HOME or ~/.cellnode)")
	fs.StringSliceVar(&f.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr, repeatable; replaces $CELLNODE_BOOTSTRAP and the default "+bootstrap.DefaultAddr+"; 'none' stays offline")
	if listen {
		fs.StringSliceVar(&f.listen, "listen", nil, "libp2p listen multiaddr, repeatable (default TCP and QUIC on all interfaces)")
	}
}

// peers resolves the bootstrap list: flags, else $CELLNODE_BOOTSTRAP, else
// the default. A list that resolves to nothing is not an error here: the
// node then tries the peers it saw before, and says it is offline if none
// answers.
func (f *netFlags) peers(ctx context.Context, log *slog.Logger) ([]peer.AddrInfo, error) {
	list, err := bootstrap.Select(f.bootstrap, os.Getenv(bootstrap.EnvVar))
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if err := checkPeerAddrs(list); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	infos, err := list.Resolve(ctx, nil)
	if err != nil {
		logResolveFailure(log, list, err)
	}
	return infos, nil
}

func parseMode(s string) (dht.Mode, error) {
	switch s {
	case "auto", "":
		return dht.ModeAuto, nil
	case "server":
		return dht.ModeServer, nil
	case "client":
		return dht.ModeClient, nil
	}
	return 0, usageErr("--dht-mode %q: want auto, server or client", s)
}

func checkName(name string) error {
	if _, err := record.ParseName(name); err != nil {
		return usageErr("%v", err)
	}
	return nil
}

func fmtAge(d time.Duration) string {
	if d < 0 {
		return "expired"
	}
	return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
}

// openSession opens a resolve.Session with the network flags: through the
// node running on this machine when useLocal is set and no --bootstrap was
// given, else with an ephemeral node of its own.
func openSession(ctx context.Context, e *env, nf *netFlags, useLocal bool) (*resolve.Session, error) {
	log := e.logger(slog.LevelWarn)
	return resolve.Open(ctx, resolve.SessionConfig{
		Home:            nf.home,
		Local:           useLocal && len(nf.bootstrap) == 0,
		Peers:           func(ctx context.Context) ([]peer.AddrInfo, error) { return nf.peers(ctx, log) },
		OfflineByChoice: nf.offlineByChoice(),
		Logger:          log,
		Warn:            e.stderr,
	})
}
