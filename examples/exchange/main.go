// Command exchange is a tiny example cell: it serves a line protocol on a
// unix socket in the cell socket directory ($CELL_SOCKET_DIR/exchange.sock)
// and, with -tcp, on a TCP address too. "PING" answers "PONG"; "QUOTE SYM"
// answers a made-up price. It has no dependencies, so cellnode can build it
// from source anywhere Go is installed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

func main() {
	tcp := flag.String("tcp", "", "also listen on this TCP address, e.g. 127.0.0.1:9000")
	flag.Parse()
	dir := socketDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Fatal(err)
	}
	sock := filepath.Join(dir, "exchange.sock")
	_ = os.Remove(sock)
	var lns []net.Listener
	ln, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	lns = append(lns, ln)
	if *tcp != "" {
		t, err := net.Listen("tcp", *tcp)
		if err != nil {
			log.Fatal(err)
		}
		lns = append(lns, t)
	}
	for _, l := range lns {
		log.Printf("exchange listening on %s", l.Addr())
		go serve(l)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	for _, l := range lns {
		l.Close()
	}
	os.Remove(sock)
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 1 && f[0] == "PING":
					fmt.Fprintln(c, "PONG")
				case len(f) == 2 && f[0] == "QUOTE":
					h := fnv.New32a()
					h.Write([]byte(f[1]))
					fmt.Fprintf(c, "%s %d.%02d\n", f[1], 10+h.Sum32()%990, h.Sum32()%100)
				default:
					fmt.Fprintln(c, "ERR unknown command")
				}
			}
		}()
	}
}
