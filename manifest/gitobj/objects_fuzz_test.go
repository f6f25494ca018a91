package gitobj

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/libp2p/go-libp2p/core/network"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
)

// fuzzRepo holds a commit, its tree and one blob (Cell.json), in memory.
type fuzzRepo struct {
	st                 *memory.Storage
	blob, tree, commit plumbing.Hash
	blobData, treeData []byte
	commitData         []byte
}

func newFuzzRepo(t testing.TB) *fuzzRepo {
	t.Helper()
	r := &fuzzRepo{st: memory.NewStorage()}
	put := func(o plumbing.EncodedObject) plumbing.Hash {
		h, err := r.st.SetEncodedObject(o)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	r.blobData = []byte(`{"name": "acme/exchange", "version": "1.0.0"}`)
	b := r.st.NewEncodedObject()
	b.SetType(plumbing.BlobObject)
	w, _ := b.Writer()
	w.Write(r.blobData)
	w.Close()
	r.blob = put(b)
	tr := r.st.NewEncodedObject()
	if err := (&object.Tree{Entries: []object.TreeEntry{{Name: manifest.FileName, Mode: filemode.Regular, Hash: r.blob}}}).Encode(tr); err != nil {
		t.Fatal(err)
	}
	r.tree = put(tr)
	sig := object.Signature{Name: "a", Email: "a@example.com", When: time.Unix(1700000000, 0).UTC()}
	c := r.st.NewEncodedObject()
	if err := (&object.Commit{Author: sig, Committer: sig, Message: "x\n", TreeHash: r.tree}).Encode(c); err != nil {
		t.Fatal(err)
	}
	r.commit = put(c)
	for _, x := range []struct {
		h   plumbing.Hash
		out *[]byte
	}{{r.tree, &r.treeData}, {r.commit, &r.commitData}} {
		_, data, err := readObject(r.st, x.h)
		if err != nil {
			t.Fatal(err)
		}
		*x.out = data
	}
	return r
}

// frames encodes object frames as a server writes them.
func frames(fs ...objectFrame) []byte {
	var buf bytes.Buffer
	w := msgio.NewVarintWriter(&buf)
	for _, f := range fs {
		b, err := objEnc.Marshal(f)
		if err != nil {
			panic(err)
		}
		if err := w.WriteMsg(b); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// FuzzObjectFrame feeds arbitrary bytes, as a provider's response to a
// request for a commit, its tree and a blob, to fetchBatch: the decoder
// every fetch of a manifest or a clone runs on bytes from the network. It
// must not panic, and may store only objects whose content hashes to the
// name it was asked for. (Frames are bounded by maxFrame, 32 MiB + 64
// bytes, which msgio allocates as soon as a length prefix announces it.)
func FuzzObjectFrame(f *testing.F) {
	r := newFuzzRepo(f)
	want := []plumbing.Hash{r.commit, r.tree, r.blob}
	good := frames(
		objectFrame{Hash: r.commit[:], Type: int8(plumbing.CommitObject), Data: r.commitData},
		objectFrame{Hash: r.tree[:], Type: int8(plumbing.TreeObject), Data: r.treeData},
		objectFrame{Hash: r.blob[:], Type: int8(plumbing.BlobObject), Data: r.blobData})
	f.Add(good)
	f.Add(frames(objectFrame{Hash: r.commit[:], Missing: true}, objectFrame{Hash: r.tree[:], Missing: true}, objectFrame{Hash: r.blob[:], Missing: true}))
	f.Add(frames(objectFrame{Hash: r.commit[:], Type: int8(plumbing.BlobObject), Data: r.commitData}))
	f.Add(frames(objectFrame{Hash: r.commit[:], Type: int8(plumbing.OFSDeltaObject), Data: r.commitData}))
	f.Add(frames(objectFrame{Hash: r.commit[:], Type: 99, Data: nil}))
	f.Add(good[:len(good)/2])
	f.Add(binary.AppendUvarint(nil, maxFrame)) // a length prefix announcing the largest frame
	f.Add(binary.AppendUvarint(nil, maxFrame+1))
	f.Add([]byte{})

	mn, err := mocknet.FullMeshLinked(2)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mn.Close() })
	client, server := mn.Hosts()[0], mn.Hosts()[1]
	var resp atomic.Pointer[[]byte]
	server.SetStreamHandler(ObjectProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = msgio.NewVarintReaderSize(s, maxObjectRequest).ReadMsg()
		_, _ = s.Write(*resp.Load())
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp.Store(&b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st := memory.NewStorage()
		got, err := fetchBatch(ctx, client, server.ID(), want, st)
		for h, o := range got {
			rd, rerr := o.Reader()
			if rerr != nil {
				t.Fatal(rerr)
			}
			data, _ := io.ReadAll(rd)
			rd.Close()
			if plumbing.ComputeHash(o.Type(), data) != h {
				t.Fatalf("stored object %s does not hash to its name (err %v)", h, err)
			}
		}
		if err == nil && len(got) != len(want) {
			t.Fatalf("no error, %d of %d objects", len(got), len(want))
		}
	})
}

// FuzzObjectRequest sends arbitrary bytes as a request to a Server that
// serves one commit: the decoder a node runs on every request of the git
// object protocol. The server must not panic, must answer only with
// objects it serves, and must still serve a good request afterwards.
func FuzzObjectRequest(f *testing.F) {
	r := newFuzzRepo(f)
	req := func(hs ...[]byte) []byte {
		b, _ := objEnc.Marshal(objectRequest{Hashes: hs})
		var buf bytes.Buffer
		_ = msgio.NewVarintWriter(&buf).WriteMsg(b)
		return buf.Bytes()
	}
	f.Add(req(r.commit[:], r.tree[:], r.blob[:]))
	f.Add(req(make([]byte, 20)))
	f.Add(req([]byte("short")))
	f.Add(req())
	f.Add([]byte{0x05, 0xa1, 0x01, 0x9f, 0x40, 0xff}) // indefinite-length array
	f.Add(binary.AppendUvarint(nil, maxObjectRequest+1))

	mn, err := mocknet.FullMeshLinked(2)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mn.Close() })
	client, server := mn.Hosts()[0], mn.Hosts()[1]
	srv := newServer(server, nil, noLimits) // one peer asks as fast as the fuzzer goes
	if err := srv.Serve(r.st, r.commit); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := client.NewStream(ctx, server.ID(), ObjectProtocol)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		// Write while reading: the server answers once it has read one
		// request, and mocknet's streams do not buffer what it leaves.
		go func() {
			_, _ = s.Write(b)
			_ = s.CloseWrite()
		}()
		rd := msgio.NewVarintReaderSize(s, maxFrame)
		for {
			msg, err := rd.ReadMsg()
			if err != nil {
				break
			}
			var fr objectFrame
			if err := objDec.Unmarshal(msg, &fr); err != nil {
				t.Fatalf("server sent a frame that does not decode: %v", err)
			}
			if !fr.Missing && plumbing.ComputeHash(plumbing.ObjectType(fr.Type), fr.Data) != plumbing.Hash(fr.Hash) {
				t.Fatalf("server sent %x with content of another hash", fr.Hash)
			}
		}
		_ = s.Reset()
		if _, err := fetchBatch(ctx, client, server.ID(), []plumbing.Hash{r.blob}, memory.NewStorage()); err != nil {
			t.Fatalf("server no longer serves a good request: %v", err)
		}
	})
}

// FuzzObjectChildren decodes arbitrary content as a commit, a tree or a
// tag, as a clone does for each object it fetched (the hash proves the
// object is the one asked for, not that it is well formed: the author of
// a cell's repository chooses its bytes).
func FuzzObjectChildren(f *testing.F) {
	r := newFuzzRepo(f)
	f.Add(uint8(plumbing.CommitObject), r.commitData)
	f.Add(uint8(plumbing.TreeObject), r.treeData)
	f.Add(uint8(plumbing.TagObject), []byte("object "+r.commit.String()+"\ntype commit\ntag v1\n\nx\n"))
	f.Add(uint8(plumbing.TreeObject), []byte("100644 a\x00short"))
	f.Add(uint8(plumbing.CommitObject), []byte("tree zz\nparent\n\n"))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		o := &plumbing.MemoryObject{}
		o.SetType(plumbing.ObjectType(typ % 5))
		_, _ = o.Write(data)
		hs, err := children(o)
		if err == nil && len(hs) > len(data) {
			t.Fatalf("%d children from %d bytes", len(hs), len(data))
		}
	})
}
