package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/manifest/project"
	"github.com/cellnode/cellnode/node"
	"github.com/spf13/cobra"
)

func initCmd(e *env) *cobra.Command {
	var home string
	c := &cobra.Command{
		Use:   "init ORG/NAME",
		Short: "Create a new cell: Cell.toml, Cell.json, a publisher key, a service skeleton",
		Long: `Init creates a cell skeleton in the directory NAME: Cell.toml (its
dependencies, with a commented example), Cell.json (name, version, a
fingerprint placeholder, the public half of a new publisher key, and a build
section), a small Go service that listens on NAME.sock in the cell socket
directory, and a README saying what to do next. The publisher key itself is
stored in the state directory (keys/ORG-NAME.key), never in the cell. Init
refuses to touch a directory that already holds files.`,
		Example: `  cellnode init acme/hello
  cd hello && git init && git add . && git commit -m "first" && go build`,
		Args: exactArgs(1, "one cell name (ORG/NAME)"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkName(args[0]); err != nil {
				return err
			}
			if home == "" {
				home = node.DefaultHome()
			}
			org, name, _ := strings.Cut(args[0], "/")
			dir := name
			if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
				return usageErr("%s already exists and is not empty; not overwriting it", dir)
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				return failErr(err)
			}
			keyPath := filepath.Join(home, "keys", org+"-"+name+".key")
			pub, err := publisherKeyFor(keyPath)
			if err != nil {
				return failErr(err)
			}
			m := manifest.Manifest{Name: args[0], Version: "0.1.0", Fingerprint: "0000000000000000",
				Publishers: []string{base64.StdEncoding.EncodeToString(pub)},
				Build:      &manifest.Build{Command: []string{"go", "build", "-o", name, "."}, Binary: name, Socket: name + ".sock"}}
			mj, _ := json.MarshalIndent(m, "", "  ")
			if _, err := manifest.Parse(mj); err != nil { // what init writes must load
				return failErr(err)
			}
			files := map[string]string{
				manifest.FileName: string(mj) + "\n",
				project.DepsFile:  fmt.Sprintf(cellTOML, args[0]),
				"go.mod":          fmt.Sprintf("module example.com/%s/%s\n\ngo 1.26\n", org, name),
				"main.go":         strings.ReplaceAll(skeletonMain, "NAME", name),
				"README.md": strings.NewReplacer("{{NAME}}", name, "{{CELL}}", args[0], "{{KEY}}", keyPath,
					"{{HOME}}", home).Replace(skeletonREADME),
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return failErr(err)
			}
			for f, content := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
					return failErr(err)
				}
			}
			fmt.Fprintf(e.stdout, "created %s/ for %s\n  publisher key: %s (keep it off the service nodes)\n  next: cd %s && git init && git add . && git commit -m first && go build\n",
				dir, args[0], keyPath, dir)
			return nil
		},
	}
	c.Flags().StringVar(&home, "home", "", "state directory for the publisher key (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

// publisherKeyFor returns the public key of the publisher key at path,
// making the key if there is none.
func publisherKeyFor(path string) (ed25519.PublicKey, error) {
	if priv, err := readPublisherKey(path); err == nil {
		return priv.Public().(ed25519.PublicKey), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return pub, writePublisherKey(path, priv)
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
// directory ($CELL_SOCKET_DIR).
package main

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
)

func main() {
	dir := os.Getenv("CELL_SOCKET_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "cell")
	}
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

// skeletonREADME is the README init writes; {{NAME}}, {{CELL}}, {{KEY}}
// (the publisher key's path) and {{HOME}} (the state directory) are
// replaced. TestInitREADME runs its cellnode command lines through the
// command parser.
const skeletonREADME = `# {{CELL}}

A cell made with ` + "`cellnode init`" + `. Next:

1. commit it:

       git init && git add . && git commit -m first && git tag v0.1.0

2. build and run it (it listens on {{NAME}}.sock in $CELL_SOCKET_DIR, or
   /tmp/cell when that is not set):

       go build && ./{{NAME}}

3. announce it. The node that runs beside the service has a key of its own;
   the publisher key ({{KEY}}, which never goes on the service machines)
   signs a delegation that lets that node publish {{CELL}}:

       cellnode id --home {{HOME}}
       cellnode key delegate --key {{KEY}} --name {{CELL}} --home {{HOME}} --out {{HOME}}/{{NAME}}.delegation
       cellnode run --dir . --home {{HOME}} --endpoint unix:${CELL_SOCKET_DIR:-/tmp/cell}/{{NAME}}.sock --delegation {{HOME}}/{{NAME}}.delegation

4. add dependencies and resolve them:

       cellnode add exchange --git https://git.example.com/acme/exchange.git --tag v1.0.0
       cellnode resolve
`
