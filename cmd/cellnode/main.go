// Command cellnode announces and finds cells on a peer-to-peer network.
// See the README and `cellnode --help`.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cellnode/cellnode/cli"
	"github.com/cellnode/cellnode/internal/logs"
)

func main() {
	// libp2p's and kad-dht's logs go to the same place as ours, errors
	// only (their warnings are mostly about peers going away, which is
	// routine here); cli.Run applies --log-format to them.
	h, _ := logs.NewHandler(os.Stderr, "text", slog.LevelDebug)
	sw := logs.NewSwitch(h, logs.Levels{Default: slog.LevelError})
	logs.Route(sw)
	slog.SetDefault(slog.New(sw))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
