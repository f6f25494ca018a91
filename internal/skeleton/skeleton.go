// Package skeleton writes the files of a new cell, as `cellnode init` makes
// them: Cell.toml (with a commented dependency), Cell.json (name, version,
// a fingerprint placeholder, the publisher's public key, a build section),
// a small Go service that serves NAME.sock in the cell socket directory, and
// a README saying what to do next.
//
// The service is a program of its own, so it repeats the cell socket
// directory rule of internal/dirs (socketDir in its main.go) and the README
// repeats it in shell; the package's tests hold both to dirs.Socket.
package skeleton

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cellnode/cellnode/manifest/project"

	"github.com/cellnode/cellnode/manifest"
)

// ErrNotEmpty is returned by Write when the cell's directory already holds
// files.
var ErrNotEmpty = errors.New("skeleton: directory not empty")

// Cell is what the skeleton is made for.
type Cell struct {
	// Name is the cell's name, ORG/NAME; the directory and the binary are
	// called NAME. Required.
	Name string
	// Publisher is the public half of the cell's publisher key. Required.
	Publisher ed25519.PublicKey
	// KeyPath and Home are the publisher key's path and the state
	// directory, named in the README's commands.
	KeyPath, Home string
}

// Files returns the skeleton's files, by name relative to the cell's
// directory. The Cell.json it holds is checked to load.
func Files(c Cell) (map[string]string, error) {
	org, name, ok := strings.Cut(c.Name, "/")
	if !ok || org == "" || name == "" {
		return nil, fmt.Errorf("skeleton: cell name %q: want ORG/NAME", c.Name)
	}
	m := manifest.Manifest{Name: c.Name, Version: "0.1.0", Fingerprint: "0000000000000000",
		Publishers: []string{base64.StdEncoding.EncodeToString(c.Publisher)},
		Build:      &manifest.Build{Command: []string{"go", "build", "-o", name, "."}, Binary: name, Socket: name + ".sock"}}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := manifest.Parse(mj); err != nil { // what init writes must load
		return nil, err
	}
	return map[string]string{
		manifest.FileName: string(mj) + "\n",
		project.DepsFile:  fmt.Sprintf(cellTOML, c.Name),
		"go.mod":          fmt.Sprintf("module example.com/%s/%s\n\ngo 1.26\n", org, name),
		"main.go":         strings.ReplaceAll(skeletonMain, "NAME", name),
		"README.md": strings.NewReplacer("{{NAME}}", name, "{{CELL}}", c.Name, "{{KEY}}", c.KeyPath,
			"{{HOME}}", c.Home).Replace(skeletonREADME),
	}, nil
}

// Write creates dir and writes the skeleton's files into it. A dir that
// already holds files is left alone, with an error matching ErrNotEmpty.
func Write(dir string, c Cell) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%w: %s already exists and is not empty; not overwriting it", ErrNotEmpty, dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	files, err := Files(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

const cellTOML = `[package]
name = %q
version = "0.1.0"

[cell]
# The cells this one depends on, by local name. cellnode resolve finds a
# running instance (this machine first, then the network), or builds and
# starts one from source when auto_spawn is set. For example:
# exchange = { git = "https://git.example.com/acme/exchange.git", tag = "v1.0.0", max_latency_ms = 50, auto_spawn = true }
`

const skeletonMain = `// Command NAME is a cell. It serves on NAME.sock in the cell socket
// directory ($CELL_SOCKET_DIR, else $XDG_RUNTIME_DIR/cell, else
// <tmp>/cell-<uid>).
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
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
	dir := socketDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Fatal(err)
	}
	sock := filepath.Join(dir, "NAME.sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("NAME listening on %s", sock)
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "hello, %s\n", sc.Text())
			}
		}()
	}
}
`

// skeletonREADME is the README; {{NAME}}, {{CELL}}, {{KEY}} (the publisher
// key's path) and {{HOME}} (the state directory) are replaced. Its line
// "sockets=..." is the cell socket directory rule in shell, run by a test
// against dirs.Socket; cli's TestInitREADME runs its cellnode command lines
// through the command parser.
const skeletonREADME = `# {{CELL}}

A cell made with ` + "`cellnode init`" + `. Next:

1. commit it:

       git init && git add . && git commit -m first && git tag v0.1.0

2. build and run it (it listens on {{NAME}}.sock in the cell socket
   directory: $CELL_SOCKET_DIR, else $XDG_RUNTIME_DIR/cell, else
   /tmp/cell-<uid>):

       go build && ./{{NAME}}

3. announce it. The node that runs beside the service has a key of its own;
   the publisher key ({{KEY}}, which never goes on the service machines)
   signs a delegation that lets that node publish {{CELL}}:

       sockets=${CELL_SOCKET_DIR:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/cell}}; sockets=${sockets:-${TMPDIR:-/tmp}/cell-$(id -u)}
       cellnode id --home {{HOME}}
       cellnode key delegate --key {{KEY}} --name {{CELL}} --home {{HOME}} --out {{HOME}}/{{NAME}}.delegation
       cellnode run --dir . --home {{HOME}} --endpoint unix:$sockets/{{NAME}}.sock --delegation {{HOME}}/{{NAME}}.delegation

4. add dependencies and resolve them:

       cellnode add exchange --git https://git.example.com/acme/exchange.git --tag v1.0.0
       cellnode resolve
`
