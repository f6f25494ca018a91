// Package sidecar runs a node beside one cell's service, as `cellnode run`
// does: Identity works out the cell from its directory (Cell.json, and the
// git commit that holds it), Run starts the node, serves the manifest
// commit, bootstraps, announces the cell while its service answers,
// follows a delegation file as it is renewed, and withdraws the cell when
// its context ends. Run owns its goroutines: it returns after they end.
package sidecar

import (
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/manifest/gitobj"

	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
)

// InputError is returned for input that is wrong (a Cell.json, a
// delegation or a name that does not fit), as opposed to a failure of the
// node or the network.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(format string, a ...any) error { return &InputError{fmt.Errorf(format, a...)} }

// Config is one cell to run beside. Node and Announcement are passed to
// node.New and Node.Announce as they are (Node.API is set).
type Config struct {
	Node         node.Config
	Announcement node.Announcement
	// ManifestDir is the git repository the manifest commit
	// (Announcement.Manifest) is served from; "" serves nothing.
	ManifestDir string
	// DelegationFile is re-read every 10 s; a changed, valid delegation
	// replaces the announcement's. "" watches nothing.
	DelegationFile string
	// Offline skips bootstrapping (offline by choice): the cell is visible
	// on this machine only.
	Offline bool
	// Running is called once the cell is announced; nil does nothing.
	Running func(n *node.Node)
}

// Run runs the node and announces the cell until ctx ends, then withdraws
// it (5 s at most) and stops the node. An error of Announce (the
// announcement does not fit) is an InputError.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Node.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Node.API = true
	n, err := node.New(cfg.Node)
	if err != nil {
		return err
	}
	defer n.Close()
	n.ReserveSequence()
	if cfg.Announcement.Manifest.Defined() && cfg.ManifestDir != "" {
		if err := n.ServeManifest(cfg.ManifestDir, cfg.Announcement.Manifest); err != nil {
			log.Warn("not serving the manifest commit", "cid", cfg.Announcement.Manifest, "err", err)
		}
	}
	if cfg.Offline {
		log.Info("offline by choice (--bootstrap none): the cell is visible on this machine only")
	} else {
		bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if err := n.Bootstrap(bctx); err != nil {
			log.Warn("offline: the cell is visible on this machine only until a peer answers", "err", err)
		}
		cancel()
	}
	a, err := n.Announce(cfg.Announcement)
	if err != nil {
		return &InputError{err}
	}
	var wg sync.WaitGroup
	if cfg.DelegationFile != "" {
		wg.Go(func() { watchDelegation(ctx, cfg.DelegationFile, a, log) })
	}
	if cfg.Running != nil {
		cfg.Running(n)
	}
	<-ctx.Done()
	wg.Wait()
	log.Info("stopping: withdrawing", "cell", cfg.Announcement.Name)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.Stop(sctx)
	return nil
}

// DelegationPEM is the PEM block type of a delegation file.
const DelegationPEM = "CELLNODE DELEGATION"

// maxDelegationFile bounds what is read of a delegation file.
const maxDelegationFile = 16 << 10

// ReadDelegation reads a delegation file written by key delegate: a regular
// file holding one PEM block of type DelegationPEM.
func ReadDelegation(path string) (*record.Delegation, error) {
	b, err := safefile.ReadFile(path, maxDelegationFile)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != DelegationPEM {
		return nil, fmt.Errorf("%s: not a %s PEM block", path, DelegationPEM)
	}
	return record.DecodeDelegation(blk.Bytes)
}

// Identity works out the cell's name and manifest commit from --name,
// --dir and --ref: a Cell.json in --dir must agree with --name; a git
// repository there gives the commit (HEAD, or --ref), whose own Cell.json
// must name the same cell. Without a repository the record carries no
// commit; an explicit --ref then is an error.
func Identity(name, dir, ref string, log *slog.Logger) (string, cid.Cid, []ed25519.PublicKey, error) {
	name, commit, m, err := cellManifest(name, dir, ref, log)
	if err != nil || m == nil {
		return name, commit, nil, err
	}
	var pubs []ed25519.PublicKey
	for _, p := range m.Publishers {
		k, err := record.ParsePublicKey(p)
		if err != nil {
			return "", cid.Undef, nil, inputErr("Cell.json publishers: %v", err)
		}
		pubs = append(pubs, k)
	}
	return name, commit, pubs, nil
}

// cellManifest is Identity's first half: the name, the commit, and the
// manifest that holds (the committed one when there is a commit).
func cellManifest(name, dir, ref string, log *slog.Logger) (string, cid.Cid, *manifest.Manifest, error) {
	m, err := manifest.Load(dir)
	switch {
	case err == nil:
		if name != "" && name != m.Name {
			return "", cid.Undef, nil, inputErr("--name %s differs from the name %s in %s", name, m.Name, filepath.Join(dir, manifest.FileName))
		}
		name = m.Name
	case errors.Is(err, manifest.ErrNotFound):
		if name == "" {
			return "", cid.Undef, nil, inputErr("no --name given and %v", err)
		}
	default:
		return "", cid.Undef, nil, inputErr("%v", err)
	}
	if _, err := record.ParseName(name); err != nil {
		return "", cid.Undef, nil, &InputError{err}
	}
	commit, err := gitobj.CommitCID(dir, ref)
	if err != nil {
		if ref == "" && (errors.Is(err, gitobj.ErrNotRepo) || errors.Is(err, gitobj.ErrNoCommits)) {
			return name, cid.Undef, m, nil
		}
		return "", cid.Undef, nil, inputErr("--ref: %v", err)
	}
	at, err := gitobj.AtCommit(dir, commit)
	switch {
	case errors.Is(err, gitobj.ErrNoManifest):
		log.Warn("the commit has no Cell.json at its root; announcing without a manifest", "cid", commit)
		return name, cid.Undef, m, nil
	case err != nil:
		return "", cid.Undef, nil, inputErr("Cell.json at %s: %v", commit, err)
	case at.Name != name:
		return "", cid.Undef, nil, inputErr("the Cell.json committed at %s names %s, not %s", commit, at.Name, name)
	}
	if dirty, derr := gitobj.Dirty(dir); derr == nil && dirty {
		log.Warn("Cell.json has uncommitted changes; the record names the committed manifest", "cid", commit)
	}
	return name, commit, at, nil
}

// watchDelegation re-reads the delegation file every 10 s and hands a
// changed, valid one to the announcer.
func watchDelegation(ctx context.Context, path string, a *node.Announcer, log *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(path); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || !fi.ModTime().After(last) {
			continue
		}
		last = fi.ModTime()
		d, err := ReadDelegation(path)
		if err == nil {
			err = a.SetDelegation(d)
		}
		if err != nil {
			log.Error("new delegation not used", "file", path, "err", err)
			continue
		}
		log.Info("delegation renewed", "not_after", d.NotAfter)
	}
}
