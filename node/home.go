package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/cellnode/cellnode/internal/dirs"
	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// State directory layout, relative to the home directory.
const (
	KeyFile     = "identity.key" // libp2p-marshalled ed25519 private key, mode 0600
	SeqFile     = "seq"          // last sequence number used, decimal
	LockFile    = "lock"         // held (flock) while a node runs with this home
	APISocket   = "api.sock"     // the local API
	PeersFile   = "peers.json"   // peers seen before (bootstrap.Store)
	ObjectCache = "objects.git"  // bare git repository of fetched objects
)

// HomeEnv names the environment variable that sets the state directory.
const HomeEnv = dirs.HomeEnv

// ErrHomeInUse is returned by New when another node holds the home's lock.
var ErrHomeInUse = errors.New("node: home directory in use by another cellnode")

// DefaultHome returns $CELLNODE_HOME, or ~/.cellnode (dirs.Home).
func DefaultHome() string { return dirs.Home() }

// Size limits of the state files read from a home.
const (
	maxKeyFile = 4 << 10
	maxSeqFile = 64
)

// ensureHome creates dir with mode 0700 if it does not exist, and refuses a
// home that another user owns or that group or others can write to: such a
// user could replace its key, its sequence file or its API socket.
func ensureHome(dir string) error {
	if err := safefile.EnsureDir("home", dir); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// LoadIdentity reads the node key from home, creating a new ed25519 key
// (file mode 0600) if there is none. It refuses a key file that others can
// read, and a key that is not ed25519.
func LoadIdentity(home string) (crypto.PrivKey, error) {
	if err := ensureHome(home); err != nil {
		return nil, err
	}
	path := filepath.Join(home, KeyFile)
	b, err := safefile.ReadFile(path, maxKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		sk, cerr := createIdentity(path)
		if cerr == nil {
			return sk, nil
		}
		if !errors.Is(cerr, fs.ErrExist) {
			return nil, cerr
		}
		// Another first run made it meanwhile: use that one.
		b, err = safefile.ReadFile(path, maxKeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("node: read key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node: key file %s is accessible by others (mode %v); run chmod 600 on it", path, fi.Mode().Perm())
	}
	sk, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("node: key file %s is corrupt: %w", path, err)
	}
	if sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("node: key file %s holds a %v key, want ed25519", path, sk.Type())
	}
	return sk, nil
}

// createIdentity makes a new ed25519 key and saves it at path, whole and
// only if path does not exist: of several first runs at once, one key wins
// and the others get an error matching fs.ErrExist.
func createIdentity(path string) (crypto.PrivKey, error) {
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("node: generate key: %w", err)
	}
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return nil, err
	}
	if err := safefile.WriteNew(path, b, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		return nil, fmt.Errorf("node: save key: %w", err)
	}
	return sk, nil
}

// lockHome takes an exclusive, non-blocking lock on home. The returned
// file releases the lock when closed (or when the process dies).
func lockHome(home string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(home, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: lock home: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s (give each cellnode its own --home)", ErrHomeInUse, home)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return f, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
