package gitobj

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/cellnode/cellnode/internal/frame"
	"github.com/fxamacker/cbor/v2"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/revlist"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-msgio"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"
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

// Limits of the object server. One request (one stream) makes the server
// send at most RequestBytes of object content: objects past that, like
// hashes asked for a second time in the same request, are answered as not
// served, and a fetcher asks for them again in its next request (Fetcher
// does). Across every stream, at most inflightBytes of content are being
// sent at once; each peer may open peerRequests streams per second (burst
// peerBurst) and receive peerBytes per second (burst RequestBytes), and the
// node serves at most totalBytes per second in all, so that serving git
// objects never starves the DHT or the health checks.
const (
	RequestBytes = 2 * MaxObjectSize

	inflightBytes = 2 * MaxObjectSize
	peerRequests  = 10
	peerBurst     = 20
	peerBytes     = 16 << 20
	totalBytes    = 32 << 20
	// streamThreshold is the size above which objects of a repository on
	// disk are read from it as they are sent, not loaded whole.
	streamThreshold = 1 << 20
	// maxLimited is how many peers' rate limiters the server keeps;
	// past it, those of idle peers are dropped.
	maxLimited = 4096
)

// limits are a Server's limits (see the constants); tests scale them.
type limits struct {
	requestBytes, inflight int64
	peerRequests           rate.Limit
	peerBurst              int
	peerBytes, totalBytes  rate.Limit
}

var defaultLimits = limits{
	requestBytes: RequestBytes, inflight: inflightBytes,
	peerRequests: peerRequests, peerBurst: peerBurst,
	peerBytes: peerBytes, totalBytes: totalBytes,
}

// Server serves, on ObjectProtocol, the objects reachable from the commits
// it was told to serve, and nothing else from the same repositories, within
// the limits above. It is safe for concurrent use.
type Server struct {
	host    host.Host
	mu      sync.RWMutex
	objects map[plumbing.Hash]storer.EncodedObjectStorer
	log     *slog.Logger

	lim      limits
	inflight *semaphore.Weighted
	total    *rate.Limiter

	peerMu sync.Mutex
	peers  map[peer.ID]*peerLimit

	statMu  sync.Mutex
	stats   ServerStats
	sending int64 // content being sent now, under statMu
}

type peerLimit struct {
	requests, bytes *rate.Limiter
}

// ServerStats counts what a Server did.
type ServerStats struct {
	Requests    uint64 // streams handled
	Malformed   uint64 // requests that could not be read or decoded
	RateLimited uint64 // streams refused by a peer's request limit
	Repeated    uint64 // hashes asked again in the same request
	OverBudget  uint64 // objects not sent because the request's byte budget was spent
	Objects     uint64 // objects sent
	Bytes       uint64 // object content sent
	// PeakInflight is the most object content that was being sent at
	// once, over every stream.
	PeakInflight int64
}

// Served returns how many objects the server has sent.
func (s *Server) Served() uint64 {
	s.statMu.Lock()
	defer s.statMu.Unlock()
	return s.stats.Objects
}

// NewServer registers a Server on h, until Close. log may be nil.
func NewServer(h host.Host, log *slog.Logger) *Server {
	return newServer(h, log, defaultLimits)
}

func newServer(h host.Host, log *slog.Logger, lim limits) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{host: h, objects: map[plumbing.Hash]storer.EncodedObjectStorer{}, log: log, lim: lim,
		inflight: semaphore.NewWeighted(lim.inflight), total: rate.NewLimiter(lim.totalBytes, int(lim.requestBytes)),
		peers: map[peer.ID]*peerLimit{}}
	h.SetStreamHandler(ObjectProtocol, s.handle)
	return s
}

// Close removes the server's stream handler from its host: no new request
// reaches it. Requests already being served run to their end.
func (s *Server) Close() error {
	s.host.RemoveStreamHandler(ObjectProtocol)
	return nil
}

// ServeDir starts serving every object reachable from the commit c in the
// git repository that contains dir. Objects larger than 1 MiB are read from
// disk as they are sent.
func (s *Server) ServeDir(dir string, c plumbing.Hash) error {
	r, _, err := openRepo(dir)
	if err != nil {
		return err
	}
	var st storer.EncodedObjectStorer = r.Storer
	if fst, ok := r.Storer.(*filesystem.Storage); ok {
		st = filesystem.NewStorageWithOptions(fst.Filesystem(), cache.NewObjectLRU(4*cache.MiByte),
			filesystem.Options{LargeObjectThreshold: streamThreshold})
	}
	return s.Serve(st, c)
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

// Stats returns what the server did so far.
func (s *Server) Stats() ServerStats {
	s.statMu.Lock()
	defer s.statMu.Unlock()
	return s.stats
}

func (s *Server) stat(f func(*ServerStats)) {
	s.statMu.Lock()
	f(&s.stats)
	s.statMu.Unlock()
}

// limiter returns p's rate limiters, creating them; when the table is full
// it first drops the limiters of idle peers (full buckets).
func (s *Server) limiter(p peer.ID) *peerLimit {
	s.peerMu.Lock()
	defer s.peerMu.Unlock()
	l, ok := s.peers[p]
	if ok {
		return l
	}
	if len(s.peers) >= maxLimited {
		for id, pl := range s.peers {
			if pl.requests.Tokens() >= float64(pl.requests.Burst()) && pl.bytes.Tokens() >= float64(pl.bytes.Burst()) {
				delete(s.peers, id)
			}
		}
	}
	l = &peerLimit{requests: rate.NewLimiter(s.lim.peerRequests, s.lim.peerBurst),
		bytes: rate.NewLimiter(s.lim.peerBytes, int(s.lim.requestBytes))}
	if len(s.peers) < maxLimited {
		s.peers[p] = l
	}
	return l
}

func (s *Server) handle(st network.Stream) {
	defer st.Close()
	deadline := time.Now().Add(time.Minute)
	_ = st.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	pl := s.limiter(st.Conn().RemotePeer())
	s.stat(func(c *ServerStats) { c.Requests++ })
	if !pl.requests.Allow() {
		s.stat(func(c *ServerStats) { c.RateLimited++ })
		_ = st.Reset()
		return
	}
	r := msgio.NewVarintReaderSize(st, maxObjectRequest)
	msg, err := r.ReadMsg()
	if err != nil {
		s.stat(func(c *ServerStats) { c.Malformed++ })
		_ = st.Reset()
		return
	}
	var req objectRequest
	err = objDec.Unmarshal(msg, &req)
	r.ReleaseMsg(msg)
	if err != nil || len(req.Hashes) > MaxBatch {
		s.stat(func(c *ServerStats) { c.Malformed++ })
		_ = st.Reset()
		return
	}
	w := bufio.NewWriterSize(st, 32<<10)
	seen := make(map[plumbing.Hash]bool, len(req.Hashes))
	var budget = s.lim.requestBytes
	for _, hb := range req.Hashes {
		err := s.serveOne(ctx, w, pl, hb, seen, &budget)
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			s.log.Debug("object stream ended", "peer", st.Conn().RemotePeer(), "err", err)
			_ = st.Reset()
			return
		}
	}
}

// serveOne writes the frame answering hash hb: the object if it is served,
// was not asked before in this request and fits what is left of budget;
// else a frame saying it is not served.
func (s *Server) serveOne(ctx context.Context, w io.Writer, pl *peerLimit, hb []byte, seen map[plumbing.Hash]bool, budget *int64) error {
	missing := func() error {
		b, err := objEnc.Marshal(objectFrame{Hash: hb, Missing: true})
		if err != nil {
			return err
		}
		return msgio.NewVarintWriter(w).WriteMsg(b)
	}
	if len(hb) != len(plumbing.ZeroHash) {
		return missing()
	}
	h := plumbing.Hash(hb)
	if seen[h] {
		s.stat(func(c *ServerStats) { c.Repeated++ })
		return missing()
	}
	seen[h] = true
	o, err := s.lookup(h)
	if err != nil {
		return missing()
	}
	size := o.Size()
	if size > *budget {
		s.stat(func(c *ServerStats) { c.OverBudget++ })
		return missing()
	}
	*budget -= size
	// Pace the peer and the node, then take a share of what may be in
	// flight; all of it is given back once the object is written.
	if err := pl.bytes.WaitN(ctx, int(size)); err != nil {
		return err
	}
	if err := s.total.WaitN(ctx, int(size)); err != nil {
		return err
	}
	if err := s.inflight.Acquire(ctx, size); err != nil {
		return err
	}
	defer s.inflight.Release(size)
	s.stat(func(c *ServerStats) { s.sending += size; c.PeakInflight = max(c.PeakInflight, s.sending) })
	defer s.stat(func(*ServerStats) { s.sending -= size })
	rd, err := o.Reader()
	if err != nil {
		return missing()
	}
	defer rd.Close()
	if err := writeObjectFrame(w, hb, o.Type(), size, rd); err != nil {
		return err
	}
	s.stat(func(c *ServerStats) { c.Objects++; c.Bytes += uint64(size) })
	return nil
}

// writeObjectFrame writes the varint-prefixed frame {1: hash, 2: type,
// 3: content} with content streamed from r, byte for byte what objEnc
// would encode for objectFrame{Hash, Type, Data}. r must yield exactly size
// bytes; otherwise the frame is cut short and an error returned (the
// caller resets the stream).
func writeObjectFrame(w io.Writer, hash []byte, typ plumbing.ObjectType, size int64, r io.Reader) error {
	hdr := make([]byte, 0, 64)
	if size == 0 {
		hdr = append(hdr, 0xa2) // content is omitted when empty
	} else {
		hdr = append(hdr, 0xa3)
	}
	hdr = append(hdr, 0x01)
	hdr = cborHead(hdr, 0x40, uint64(len(hash)))
	hdr = append(hdr, hash...)
	hdr = append(hdr, 0x02)
	hdr = cborHead(hdr, 0x00, uint64(typ))
	if size > 0 {
		hdr = append(hdr, 0x03)
		hdr = cborHead(hdr, 0x40, uint64(size))
	}
	prefix := binary.AppendUvarint(nil, uint64(len(hdr))+uint64(size))
	if _, err := w.Write(append(prefix, hdr...)); err != nil {
		return err
	}
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("manifest: object %x gave %d of its %d bytes", hash, n, size)
	}
	return nil
}

// cborHead appends the head of a CBOR item of major type mt (0x00 unsigned,
// 0x40 byte string) with argument v, in its shortest form.
func cborHead(b []byte, mt byte, v uint64) []byte {
	switch {
	case v < 24:
		return append(b, mt|byte(v))
	case v <= 0xff:
		return append(b, mt|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, mt|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, mt|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mt|27), v)
}

// lookup returns object h if it is served and not larger than
// MaxObjectSize, without reading its content.
func (s *Server) lookup(h plumbing.Hash) (plumbing.EncodedObject, error) {
	s.mu.RLock()
	st, ok := s.objects[h]
	s.mu.RUnlock()
	if !ok {
		return nil, ErrMissingObject
	}
	o, err := st.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return nil, err
	}
	if o.Size() > MaxObjectSize || o.Size() < 0 {
		return nil, fmt.Errorf("manifest: object %s is %d bytes, limit %d", h, o.Size(), MaxObjectSize)
	}
	return o, nil
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
