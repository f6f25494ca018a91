package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/internal/frame"
	"github.com/fxamacker/cbor/v2"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/revlist"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
)

// ObjectProtocol is the stream protocol on which nodes serve the git
// objects of the commits they announce. A request is one varint-prefixed
// CBOR map {1: [hash, ...]} of at most MaxBatch 20-byte object hashes; the
// response is one varint-prefixed CBOR frame per requested hash, in order:
// {1: hash, 2: type, 3: content} for an object served (type 1 commit,
// 2 tree, 3 blob, 4 tag; content without git's "type size\0" header), or
// {1: hash, 4: true} for one the server does not serve.
const ObjectProtocol protocol.ID = "/cell/git/1.0.0"

const (
	// MaxBatch is the most objects one request may ask for.
	MaxBatch = 512
	// MaxObjectSize is the largest git object served or accepted, in bytes.
	MaxObjectSize = 32 << 20

	maxObjectRequest = MaxBatch*24 + 64
	maxFrame         = MaxObjectSize + 64
)

// Errors of object fetching; match them with errors.Is.
var (
	// ErrTampered means a provider served data whose hash is not the one
	// asked for: a lying or broken provider.
	ErrTampered = errors.New("manifest: provider served an object that does not match its hash")
	// ErrMissingObject means a provider does not serve an object.
	ErrMissingObject = errors.New("manifest: provider does not have the object")
	// ErrNoManifest means the commit's tree has no Cell.json.
	ErrNoManifest = errors.New("manifest: commit has no Cell.json")
)

type objectRequest struct {
	Hashes [][]byte `cbor:"1,keyasint"`
}

type objectFrame struct {
	Hash    []byte `cbor:"1,keyasint"`
	Type    int8   `cbor:"2,keyasint,omitempty"`
	Data    []byte `cbor:"3,keyasint,omitempty"`
	Missing bool   `cbor:"4,keyasint,omitempty"`
}

var objEnc, objDec = func() (cbor.EncMode, cbor.DecMode) {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	dm, err := cbor.DecOptions{
		MaxArrayElements: MaxBatch, MaxNestedLevels: 4,
		IndefLength: cbor.IndefLengthForbidden, TagsMd: cbor.TagsForbidden,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return em, dm
}()

// Server serves, on ObjectProtocol, the objects reachable from the commits
// it was told to serve, and nothing else from the same repositories. It is
// safe for concurrent use.
type Server struct {
	mu      sync.RWMutex
	objects map[plumbing.Hash]storer.EncodedObjectStorer
	log     *slog.Logger
	served  atomic.Uint64 // objects sent
}

// Served returns how many objects the server has sent.
func (s *Server) Served() uint64 { return s.served.Load() }

// NewServer registers a Server on h. log may be nil.
func NewServer(h host.Host, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{objects: map[plumbing.Hash]storer.EncodedObjectStorer{}, log: log}
	h.SetStreamHandler(ObjectProtocol, s.handle)
	return s
}

// ServeDir starts serving every object reachable from the commit c in the
// git repository that contains dir.
func (s *Server) ServeDir(dir string, c plumbing.Hash) error {
	r, _, err := openRepo(dir)
	if err != nil {
		return err
	}
	return s.Serve(r.Storer, c)
}

// Serve starts serving every object reachable from commit c in st.
func (s *Server) Serve(st storer.EncodedObjectStorer, c plumbing.Hash) error {
	hashes, err := revlist.Objects(st, []plumbing.Hash{c}, nil)
	if err != nil {
		return fmt.Errorf("manifest: list objects of %s: %w", c, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hashes {
		s.objects[h] = st
	}
	return nil
}

// Len returns the number of objects served.
func (s *Server) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.objects)
}

func (s *Server) handle(st network.Stream) {
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(time.Minute))
	r := msgio.NewVarintReaderSize(st, maxObjectRequest)
	msg, err := r.ReadMsg()
	if err != nil {
		_ = st.Reset()
		return
	}
	var req objectRequest
	err = objDec.Unmarshal(msg, &req)
	r.ReleaseMsg(msg)
	if err != nil || len(req.Hashes) > MaxBatch {
		_ = st.Reset()
		return
	}
	w := msgio.NewVarintWriter(st)
	for _, hb := range req.Hashes {
		f := objectFrame{Hash: hb, Missing: true}
		if len(hb) == len(plumbing.ZeroHash) {
			if typ, data, err := s.read(plumbing.Hash(hb)); err == nil {
				f = objectFrame{Hash: hb, Type: int8(typ), Data: data}
				s.served.Add(1)
			}
		}
		b, err := objEnc.Marshal(f)
		if err == nil {
			err = w.WriteMsg(b)
		}
		if err != nil {
			_ = st.Reset()
			return
		}
	}
}

func (s *Server) read(h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	s.mu.RLock()
	st, ok := s.objects[h]
	s.mu.RUnlock()
	if !ok {
		return 0, nil, ErrMissingObject
	}
	return readObject(st, h)
}

// readObject returns the type and content of object h in st.
func readObject(st storer.EncodedObjectStorer, h plumbing.Hash) (plumbing.ObjectType, []byte, error) {
	o, err := st.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return 0, nil, err
	}
	if o.Size() > MaxObjectSize {
		return 0, nil, fmt.Errorf("manifest: object %s is %d bytes, limit %d", h, o.Size(), MaxObjectSize)
	}
	rd, err := o.Reader()
	if err != nil {
		return 0, nil, err
	}
	defer rd.Close()
	data, err := io.ReadAll(io.LimitReader(rd, MaxObjectSize+1))
	if err != nil {
		return 0, nil, err
	}
	return o.Type(), data, nil
}

// fetchBatch asks p for the objects hashes and stores in st each one that
// hashes to its name. It returns the objects p served, ErrTampered (wrapped,
// naming the peer) as soon as one does not match, and ErrMissingObject if p
// lacks any.
func fetchBatch(ctx context.Context, h host.Host, p peer.ID, hashes []plumbing.Hash, st storer.EncodedObjectStorer) (map[plumbing.Hash]plumbing.EncodedObject, error) {
	s, err := h.NewStream(ctx, p, ObjectProtocol)
	if err != nil {
		return nil, fmt.Errorf("manifest: open object stream to %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	req := objectRequest{Hashes: make([][]byte, len(hashes))}
	for i, hh := range hashes {
		req.Hashes[i] = bytes.Clone(hh[:])
	}
	b, _ := objEnc.Marshal(req)
	if err := msgio.NewVarintWriter(s).WriteMsg(b); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("manifest: request objects from %s: %w", p, err)
	}
	_ = s.CloseWrite()
	// An object frame may be 32 MiB: allocate only what the peer sends.
	r := frame.NewReader(s, maxFrame)
	got := make(map[plumbing.Hash]plumbing.EncodedObject, len(hashes))
	var missing int
	for _, want := range hashes {
		msg, err := r.Next()
		if err != nil {
			_ = s.Reset()
			return got, fmt.Errorf("manifest: read objects from %s: %w", p, err)
		}
		var f objectFrame
		err = objDec.Unmarshal(msg, &f)
		if err != nil || !bytes.Equal(f.Hash, want[:]) {
			_ = s.Reset()
			return got, fmt.Errorf("%w: %s sent a malformed frame for %s", ErrTampered, p, want)
		}
		if f.Missing {
			missing++
			continue
		}
		typ := plumbing.ObjectType(f.Type)
		if !typ.Valid() || typ == plumbing.OFSDeltaObject || typ == plumbing.REFDeltaObject {
			_ = s.Reset()
			return got, fmt.Errorf("%w: %s sent object %s of type %d", ErrTampered, p, want, f.Type)
		}
		if plumbing.ComputeHash(typ, f.Data) != want {
			_ = s.Reset()
			return got, fmt.Errorf("%w: %s sent %d bytes for %s that hash to %s", ErrTampered, p, len(f.Data), want, plumbing.ComputeHash(typ, f.Data))
		}
		o := st.NewEncodedObject()
		o.SetType(typ)
		o.SetSize(int64(len(f.Data)))
		w, _ := o.Writer()
		_, _ = w.Write(f.Data)
		_ = w.Close()
		if _, err := st.SetEncodedObject(o); err != nil {
			return got, fmt.Errorf("manifest: store object %s: %w", want, err)
		}
		got[want] = o
	}
	if missing > 0 {
		return got, fmt.Errorf("%w: %s lacks %d of %d objects", ErrMissingObject, p, missing, len(hashes))
	}
	return got, nil
}

// children returns the objects o refers to that a clone needs: a commit's
// tree and parents, a tree's entries (not submodule commits), a tag's
// target.
func children(o plumbing.EncodedObject) ([]plumbing.Hash, error) {
	switch o.Type() {
	case plumbing.CommitObject:
		var c object.Commit
		if err := c.Decode(o); err != nil {
			return nil, err
		}
		return append([]plumbing.Hash{c.TreeHash}, c.ParentHashes...), nil
	case plumbing.TreeObject:
		var t object.Tree
		if err := t.Decode(o); err != nil {
			return nil, err
		}
		var out []plumbing.Hash
		for _, e := range t.Entries {
			if e.Mode.IsFile() || e.Mode == filemode.Dir {
				out = append(out, e.Hash)
			}
		}
		return out, nil
	case plumbing.TagObject:
		var t object.Tag
		if err := t.Decode(o); err != nil {
			return nil, err
		}
		return []plumbing.Hash{t.Target}, nil
	}
	return nil, nil
}
