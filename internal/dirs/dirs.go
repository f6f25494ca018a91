// Package dirs says where cellnode keeps things on this machine: the home
// (a node's state directory), the runtime directory (where running cells
// register themselves and the agent's API socket lives) and the cell socket
// directory (where cells serve their unix sockets, as the cell SDKs read
// it). It is the one place these rules are written in Go; the example cells
// and the skeleton `cellnode init` writes are programs of their own and
// repeat the socket rule, which a test holds to this one.
//
// Each rule reads the environment when called. Own checks that a
// directory is this user's alone before anything in it is trusted: in a
// shared /tmp another user could create it first. Everything here is safe
// for concurrent use.
package dirs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cellnode/cellnode/internal/safefile"
)

// The environment variables the rules read.
const (
	// HomeEnv sets the home.
	HomeEnv = "CELLNODE_HOME"
	// RuntimeEnv sets the runtime directory.
	RuntimeEnv = "CELLNODE_RUNTIME_DIR"
	// SocketEnv sets the cell socket directory.
	SocketEnv = "CELL_SOCKET_DIR"
	// XDGRuntimeEnv is the session's runtime directory (XDG base
	// directory specification); both runtime rules fall back on it.
	XDGRuntimeEnv = "XDG_RUNTIME_DIR"
)

// ErrNotOwn is returned by Own for a directory that another user owns or
// that group or others can write to.
var ErrNotOwn = errors.New("dirs: not a directory that only this user can write to")

// Home returns $CELLNODE_HOME, else ~/.cellnode, else .cellnode when the
// user has no home directory.
func Home() string {
	if h := os.Getenv(HomeEnv); h != "" {
		return h
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".cellnode")
	}
	return ".cellnode"
}

// Runtime returns $CELLNODE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/cellnode,
// else <tmp>/cellnode-<uid>.
func Runtime() string {
	return pick(RuntimeEnv, "cellnode")
}

// Socket returns $CELL_SOCKET_DIR, else $XDG_RUNTIME_DIR/cell, else
// <tmp>/cell-<uid>.
func Socket() string {
	return pick(SocketEnv, "cell")
}

// pick is the rule both runtime directories follow: the variable env, else
// $XDG_RUNTIME_DIR/name, else <tmp>/name-<uid> (<tmp> is $TMPDIR, else
// /tmp).
func pick(env, name string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	if d := os.Getenv(XDGRuntimeEnv); d != "" {
		return filepath.Join(d, name)
	}
	return filepath.Join(os.TempDir(), name+"-"+strconv.Itoa(os.Getuid()))
}

// Own returns nil if dir (not a symbolic link) is a directory this user
// owns and that neither its group nor others can write to; otherwise an
// error matching ErrNotOwn, or the error of Lstat (fs.ErrNotExist for a
// missing directory). what names the directory in the error.
func Own(what, dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s %s", ErrNotOwn, what, dir)
	}
	if err := safefile.CheckDir(what, dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotOwn, err)
	}
	return nil
}

// Ensure creates dir (and missing parents) with mode 0700 if it does not
// exist, then checks it as safefile.CheckDir does; what names it in the
// error ("home", "cell socket directory").
func Ensure(what, dir string) error {
	return safefile.EnsureDir(what, dir)
}
