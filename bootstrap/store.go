package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cellnode/cellnode/internal/safefile"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// DefaultMaxPeers is the number of peers a Store keeps when Max is zero.
const DefaultMaxPeers = 64

// maxAddrsPerPeer bounds the addresses kept for one stored peer; the most
// recently seen ones win.
const maxAddrsPerPeer = 16

// maxStoreFile bounds what Load reads: 64 peers with 16 addresses each
// take about 100 KiB.
const maxStoreFile = 1 << 20

// storeVersion is the version of the file format written by Save.
const storeVersion = 1

// ErrCorruptStore is returned (wrapped) by Load and Save when the peer file
// exists but cannot be read as a peer store. The file is left untouched.
var ErrCorruptStore = errors.New("bootstrap: corrupt peer store")

// Store persists the peers seen on earlier runs in one JSON file, most
// recently seen first, as fallback bootstrap peers. It is safe for concurrent
// use within one process; across processes, writes are atomic (a reader sees
// the old or the new file) but concurrent Saves may lose each other's peers.
type Store struct {
	// Max is the number of peers kept; zero means DefaultMaxPeers. Set it
	// before the first Save and do not change it afterwards.
	Max int

	path string
	mu   sync.Mutex
}

// NewStore returns a Store backed by the file at path (typically
// <home>/peers.json). It does not touch the file system.
func NewStore(path string) *Store { return &Store{path: path} }

// Path returns the file the Store reads and writes.
func (s *Store) Path() string { return s.path }

type storeFile struct {
	Version int          `json:"version"`
	Peers   []storedPeer `json:"peers"`
}

type storedPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// Load returns the stored peers, most recently seen first. A missing file
// gives nil, nil. A file that is not valid JSON of the expected shape gives an
// error wrapping ErrCorruptStore that names the file; an unknown version is an
// error too, and so is a path that is not a regular file or holds more than
// 1 MiB. Entries with an unparseable peer ID or address (say, from a newer
// release) are skipped, as are peers left with no address.
func (s *Store) Load() ([]peer.AddrInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

func (s *Store) load() ([]peer.AddrInfo, error) {
	data, err := safefile.ReadFile(s.path, maxStoreFile) // a regular file only: never a FIFO or a device
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bootstrap: read peer store: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w %s (fix or remove it): %w", ErrCorruptStore, s.path, err)
	}
	switch {
	case f.Version == 0:
		return nil, fmt.Errorf("%w %s (fix or remove it): no version", ErrCorruptStore, s.path)
	case f.Version != storeVersion:
		return nil, fmt.Errorf("bootstrap: peer store %s has version %d, this release reads version %d", s.path, f.Version, storeVersion)
	}
	var infos []peer.AddrInfo
	for _, sp := range f.Peers {
		id, err := peer.Decode(sp.ID)
		if err != nil {
			continue
		}
		p := peer.AddrInfo{ID: id}
		for _, a := range sp.Addrs {
			if m, err := ma.NewMultiaddr(a); err == nil {
				p.Addrs = append(p.Addrs, m)
			}
		}
		if len(p.Addrs) > 0 {
			infos = addAddrs(infos, p)
		}
	}
	return infos, nil
}

// Save records peers as seen now. They are merged with the stored ones: peers
// go first in the order given, then the previously stored peers not among
// them; a peer's new addresses go before its stored ones (at most 16 kept);
// peers without an ID or an address are ignored. At most Max peers are kept.
// The file is replaced atomically (temporary file in the same directory, then
// rename) with mode 0600; the directory is created (0700) if missing. If the
// existing file is corrupt, Save returns Load's error and leaves it as is.
func (s *Store) Save(peers []peer.AddrInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.load()
	if err != nil {
		return err
	}
	var merged []peer.AddrInfo
	for _, p := range peers {
		if len(p.Addrs) > 0 {
			merged = addAddrs(merged, p)
		}
	}
	for _, p := range old {
		merged = addAddrs(merged, p)
	}
	limit := s.Max
	if limit <= 0 {
		limit = DefaultMaxPeers
	}
	f := storeFile{Version: storeVersion, Peers: make([]storedPeer, 0, min(len(merged), limit))}
	for _, p := range merged[:min(len(merged), limit)] {
		sp := storedPeer{ID: p.ID.String()}
		for _, a := range p.Addrs[:min(len(p.Addrs), maxAddrsPerPeer)] {
			sp.Addrs = append(sp.Addrs, a.String())
		}
		f.Peers = append(f.Peers, sp)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("bootstrap: encode peer store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("bootstrap: write peer store: %w", err)
	}
	if err := safefile.WriteFile(s.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("bootstrap: write peer store: %w", err)
	}
	return nil
}
