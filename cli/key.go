package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/node"
	"github.com/cellnode/cellnode/node/sidecar"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"
)

const delegationPEM = sidecar.DelegationPEM

func keyCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "Publisher keys and the delegations they sign",
		Long: `A cell's Cell.json lists its publisher keys. A publisher key signs a
short-lived delegation for each node that runs the cell, so the nodes never
hold the publisher key; finders that trust the publisher show only the
instances it delegated.`,
		Example: `  cellnode key new --out acme.key
  cellnode key delegate --key acme.key --name acme/exchange --node "$(cellnode id --home /var/lib/cellnode)" --out exchange.delegation`,
	}
	c.AddCommand(keyNewCmd(e), keyDelegateCmd(e))
	return c
}

func keyNewCmd(e *env) *cobra.Command {
	var out, home string
	c := &cobra.Command{
		Use:   "new [--out FILE]",
		Short: "Make a new publisher key and print its public key",
		Long: `New writes a new ed25519 publisher key to FILE (PKCS#8 PEM, mode 0600; it
refuses to overwrite a file) and prints the public key in base64, ready for
the "publishers" list of Cell.json. Without --out the key goes to
keys/publisher.key in the state directory, never into the current
directory (which may be a cell's repository). Keep the file off the
service nodes.`,
		Example: `  cellnode key new --out ~/.cellnode/acme-exchange.key`,
		Args:    exactArgs(0, "no arguments"),
		RunE:    func(*cobra.Command, []string) error { return keyNew(e, out, home) },
	}
	c.Flags().StringVar(&out, "out", "", "file to write the private key to (default keys/publisher.key in the state directory)")
	c.Flags().StringVar(&home, "home", "", "state directory for the default --out (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

// writePublisherKey writes priv as PKCS#8 PEM with mode 0600, refusing to
// replace an existing file.
func writePublisherKey(path string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; not overwriting a key: %w", path, os.ErrExist)
		}
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// maxKeyFile bounds what is read of a publisher key or delegation file
// (a few hundred bytes of PEM when written by this command).
const maxKeyFile = 16 << 10

// readPublisherKey reads a key written by writePublisherKey.
func readPublisherKey(path string) (ed25519.PrivateKey, error) {
	b, err := safefile.ReadFile(path, maxKeyFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", path)
	}
	return priv, nil
}

func keyDelegateCmd(e *env) *cobra.Command {
	var keyFile, name, nodeID, home, out string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "delegate --key FILE --name ORG/NAME --node PEER_ID|--home DIR [--ttl D] [--out FILE]",
		Short: "Sign a delegation that lets one node announce one cell",
		Long: `Delegate signs, with a publisher key, a delegation for one node key (given
by its peer ID, or read from the node's state directory) to announce one
cell until now + --ttl (at most 90 days). Give the file to the node:
cellnode run ... --delegation FILE. The node re-reads the file when it
changes, so renewing is writing a new one in its place.`,
		Example: `  cellnode key delegate --key acme.key --name acme/exchange --home /var/lib/cellnode --out exchange.delegation
  cellnode key delegate --key acme.key --name acme/exchange --node 12D3KooW... --ttl 72h`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error { return keyDelegate(e, keyFile, name, nodeID, home, out, ttl) },
	}
	f := c.Flags()
	f.StringVar(&keyFile, "key", "", "the publisher key file (from 'cellnode key new')")
	f.StringVar(&name, "name", "", "the cell, ORG/NAME")
	f.StringVar(&nodeID, "node", "", "the node's peer ID")
	f.StringVar(&home, "home", "", "the node's state directory (reads its identity)")
	f.DurationVar(&ttl, "ttl", 7*24*time.Hour, "how long the delegation is valid")
	f.StringVar(&out, "out", "", "write the delegation here (default stdout)")
	return c
}

// nodePublicKey returns the ed25519 key of a peer ID, or of the identity in
// a node's home.
func nodePublicKey(id, home string) (ed25519.PublicKey, error) {
	var pk crypto.PubKey
	if id != "" {
		p, err := peer.Decode(id)
		if err != nil {
			return nil, fmt.Errorf("--node %q: %v", id, err)
		}
		if pk, err = p.ExtractPublicKey(); err != nil {
			return nil, fmt.Errorf("--node %q: no public key in this peer ID: %v", id, err)
		}
	} else {
		if _, err := os.Stat(filepath.Join(home, node.KeyFile)); err != nil {
			return nil, fmt.Errorf("--home %s: no node identity there yet; create it with 'cellnode id --home %s' (which prints the peer ID), then delegate again", home, home)
		}
		sk, err := node.LoadIdentity(home)
		if err != nil {
			return nil, err
		}
		pk = sk.GetPublic()
	}
	if pk.Type() != crypto.Ed25519 {
		return nil, errors.New("the node key is not ed25519")
	}
	raw, err := pk.Raw()
	return ed25519.PublicKey(raw), err
}

func peerOf(k ed25519.PublicKey) string {
	pk, err := crypto.UnmarshalEd25519PublicKey(k)
	if err != nil {
		return "?"
	}
	id, _ := peer.IDFromPublicKey(pk)
	return id.String()
}

func idCmd(e *env) *cobra.Command {
	var home string
	c := &cobra.Command{
		Use:   "id [--home DIR]",
		Short: "Print this node's peer ID, creating its identity if there is none",
		Example: `  cellnode id --home /var/lib/cellnode
  cellnode key delegate --key acme.key --name acme/exchange --node "$(cellnode id --home /var/lib/cellnode)"`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error { return printID(e, home) },
	}
	c.Flags().StringVar(&home, "home", "", "state directory (default $CELLNODE_HOME or ~/.cellnode)")
	return c
}

// printID prints the peer ID of home's node key.
func printID(e *env, home string) error {
	if home == "" {
		home = dirs.Home()
	}
	sk, err := node.LoadIdentity(home)
	if err != nil {
		return failErr(err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return failErr(err)
	}
	fmt.Fprintln(e.stdout, id)
	return nil
}

// keyDelegate writes a delegation from a publisher key to a node.
func keyDelegate(e *env, keyFile string, name string, nodeID string, home string, out string, ttl time.Duration) error {
	if err := checkName(name); err != nil {
		return err
	}
	if keyFile == "" || (nodeID == "") == (home == "") {
		return usageErr("give --key, and one of --node or --home")
	}
	if ttl <= 0 || ttl > record.MaxDelegationTTL {
		return usageErr("--ttl must be between 0 and %v", record.MaxDelegationTTL)
	}
	priv, err := readPublisherKey(keyFile)
	if err != nil {
		return usageErr("--key: %v", err)
	}
	nodeKey, err := nodePublicKey(nodeID, home)
	if err != nil {
		return usageErr("%v", err)
	}
	now := time.Now()
	d, err := record.SignDelegation(priv, record.Delegation{Name: name, Node: nodeKey, Issued: now, NotAfter: now.Add(ttl)})
	if err != nil {
		return failErr(err)
	}
	blk := pem.EncodeToMemory(&pem.Block{Type: delegationPEM, Headers: map[string]string{
		"Cell": name, "Not-After": d.NotAfter.Format(time.RFC3339)}, Bytes: d.Bytes()})
	if out == "" {
		_, err = e.stdout.Write(blk)
		return err
	}
	if err := safefile.WriteFile(out, blk, 0o644); err != nil {
		return failErr(err)
	}
	fmt.Fprintf(e.stderr, "cellnode: wrote %s: %s may announce %s until %s\n", out, shortPeer(peerOf(nodeKey)), name, d.NotAfter.Format(time.RFC3339))
	return nil
}

// keyNew makes a publisher key.
func keyNew(e *env, out string, home string) error {
	if out == "" {
		if home == "" {
			home = dirs.Home()
		}
		out = filepath.Join(home, "keys", "publisher.key")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if err := writePublisherKey(out, priv); err != nil {
		if errors.Is(err, os.ErrExist) {
			return failErr(fmt.Errorf("%w; pass --out for another file", err))
		}
		return failErr(err)
	}
	fmt.Fprintln(e.stdout, base64.StdEncoding.EncodeToString(pub))
	fmt.Fprintf(e.stderr, "cellnode: wrote %s; add the public key above to \"publishers\" in Cell.json\n", out)
	return nil
}
