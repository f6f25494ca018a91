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
	"github.com/libp2p/go-libp2p/gologshim"
)

func main() {
	// libp2p's own logs go to the same place as ours, errors only: its
	// warnings are mostly about peers going away, which is routine here.
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})
	gologshim.SetDefaultHandler(h)
	slog.SetDefault(slog.New(h))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
