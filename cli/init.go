package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/skeleton"
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
		RunE: func(_ *cobra.Command, args []string) error { return initCell(e, args[0], home) },
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

// initCell writes the skeleton of cell into ./NAME, with a publisher key
// in home's keys/ (made unless there is one).
func initCell(e *env, cell, home string) error {
	if err := checkName(cell); err != nil {
		return err
	}
	if home == "" {
		home = dirs.Home()
	}
	org, name, _ := strings.Cut(cell, "/")
	if ents, err := os.ReadDir(name); err == nil && len(ents) > 0 {
		return usageErr("%s already exists and is not empty; not overwriting it", name)
	}
	keyPath := filepath.Join(home, "keys", org+"-"+name+".key")
	pub, err := publisherKeyFor(keyPath)
	if err != nil {
		return failErr(err)
	}
	if err := skeleton.Write(name, skeleton.Cell{Name: cell, Publisher: pub, KeyPath: keyPath, Home: home}); err != nil {
		if errors.Is(err, skeleton.ErrNotEmpty) {
			return usageErr("%s already exists and is not empty; not overwriting it", name)
		}
		return failErr(err)
	}
	fmt.Fprintf(e.stdout, "created %s/ for %s\n  publisher key: %s (keep it off the service nodes)\n  next: cd %s && git init && git add . && git commit -m first && go build\n",
		name, cell, keyPath, name)
	return nil
}
