// Command trader is the example cell that depends on acme/exchange. Its
// build resolves the exchange with cellnode:
//
//	go generate   # runs cellnode resolve, writes exchange_instances.go
//	go build
//
// and at run time it asks the first endpoint that answers for a quote.
package main

//go:generate cellnode resolve --format go --out .

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// socketDir is the cell socket directory: $CELL_SOCKET_DIR, else
// $XDG_RUNTIME_DIR/cell, else <tmp>/cell-<uid> (cellnode's rule; a test
// holds this copy to it).
func socketDir() string {
	if d := os.Getenv("CELL_SOCKET_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "cell")
	}
	return filepath.Join(os.TempDir(), "cell-"+strconv.Itoa(os.Getuid()))
}

// dial connects to an endpoint as cellnode resolve writes them:
// "unix://NAME.sock" (in the cell socket directory), "unix:/abs/path" or
// "host:port".
func dial(ep string) (net.Conn, error) {
	switch {
	case strings.HasPrefix(ep, "unix://"):
		return net.DialTimeout("unix", filepath.Join(socketDir(), strings.TrimPrefix(ep, "unix://")), time.Second)
	case strings.HasPrefix(ep, "unix:"):
		return net.DialTimeout("unix", strings.TrimPrefix(ep, "unix:"), time.Second)
	}
	return net.DialTimeout("tcp", ep, time.Second)
}

func main() {
	for _, ep := range ExchangeInstances {
		c, err := dial(ep)
		if err != nil {
			log.Printf("%s: %v", ep, err)
			continue
		}
		fmt.Fprintln(c, "QUOTE ACME")
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		fmt.Printf("exchange at %s quotes %s", ep, line)
		return
	}
	log.Fatal("no exchange answered")
}
