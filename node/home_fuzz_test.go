package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellnode/cellnode/bootstrap"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// The files a node reads from its home and runtime directories, fuzzed as
// a corrupt disk or another local user would write them.

// FuzzPeersFile: peers.json, the peers seen before (bootstrap.Store).
func FuzzPeersFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"peers":[{"id":"12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7","addrs":["/ip4/127.0.0.1/tcp/4001"]}]}`))
	f.Add([]byte(`{"version":1,"peers":[{"id":"x","addrs":["/garbage"]},{"id":"12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7","addrs":[]}]}`))
	f.Add([]byte(`{"version":2,"peers":null}`))
	f.Add([]byte(`{"peers":[]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), PeersFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s := bootstrap.NewStore(path)
		infos, err := s.Load()
		if err != nil {
			return
		}
		for _, p := range infos {
			if p.ID == "" || len(p.Addrs) == 0 {
				t.Fatalf("loaded a peer with no ID or no address: %+v", p)
			}
		}
		if len(infos) > 0 {
			if err := s.Save(infos); err != nil {
				t.Fatalf("what Load returns does not Save: %v", err)
			}
			again, err := s.Load()
			if err != nil || len(again) == 0 {
				t.Fatalf("reload after Save: %d peers, %v", len(again), err)
			}
		}
	})
}

// FuzzSequenceFile: the last sequence number used. Whatever it holds, a
// sequencer that loads must hand out a number above it.
func FuzzSequenceFile(f *testing.F) {
	for _, s := range []string{"1795000000000000\n", "18446744073709551615", "-1", " 12 ", "", "0x10", "١٢"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), SeqFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := NewSequencer(path, func() time.Time { return time.UnixMicro(1) })
		if err != nil {
			return
		}
		last := s.last
		n, err := s.Next()
		if last >= record.MaxSeq-withdrawalReserve {
			if err == nil {
				t.Fatalf("sequence went past the numbers records allow, from %d to %d", last, n)
			}
			// Withdrawals may take what is left, never past record.MaxSeq.
			w, err := s.NextWithdrawal()
			if last >= record.MaxSeq && err == nil || err == nil && (w <= last || w > record.MaxSeq) {
				t.Fatalf("withdrawal after %d: %d", last, w)
			}
			return // no number above it: a clear error, never a wrap to 0
		}
		if err != nil {
			t.Fatalf("Next after %d: %v", last, err)
		}
		if n <= last {
			t.Fatalf("sequence went from %d to %d", last, n)
		}
		if w, err := s.NextWithdrawal(); err != nil || w != n+1 {
			t.Fatalf("withdrawal after %d: %d, %v", n, w, err)
		}
	})
}

// FuzzIdentityFile: the node key. A file that loads holds an ed25519 key.
func FuzzIdentityFile(f *testing.F) {
	sk, _, _ := crypto.GenerateEd25519Key(nil)
	good, _ := crypto.MarshalPrivateKey(sk)
	f.Add(good)
	rsa, _, _ := crypto.GenerateECDSAKeyPair(nil)
	other, _ := crypto.MarshalPrivateKey(rsa)
	f.Add(other)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		home := t.TempDir()
		if err := os.WriteFile(filepath.Join(home, KeyFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadIdentity(home)
		if err == nil && k.Type() != crypto.Ed25519 {
			t.Fatalf("loaded a %v key", k.Type())
		}
	})
}

// FuzzLocalCells: the entries announcers leave in the runtime directory,
// which every finder on the machine reads. Entries that do not parse are
// skipped; the records they carry are verified like any other.
func FuzzLocalCells(f *testing.F) {
	c := LocalCell{Name: "acme/exchange", Peer: "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7", Endpoint: ":9000",
		Local: []string{"127.0.0.1:9000"}, PID: 1, Started: time.Unix(1, 0), Record: []byte{0xa2, 0x01, 0x40, 0x02, 0x40}}
	b, _ := json.Marshal(c)
	f.Add(b)
	f.Add([]byte(`{"name":"acme/exchange","record":"not base64"}`))
	f.Add([]byte(`{"name":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "x.acme_exchange.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, c := range LocalCells(dir) {
			if r, err := record.Verify(c.Record, c.Name, time.Now()); err == nil && r.Name != c.Name {
				t.Fatalf("record of %s accepted for %s", r.Name, c.Name)
			}
		}
	})
}
