package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
)

// summary is what a merge returned: peer, seq and withdrawal of each record,
// in order.
func summary(recs []*record.Record) []string {
	var out []string
	for _, r := range recs {
		s := r.Peer.String() + "/" + strconv.FormatUint(r.Seq, 10)
		if r.Withdrawn {
			s += "/withdrawn"
		}
		out = append(out, s)
	}
	return out
}

// mergeInput is raws holding what a find meets: two sequences of one peer,
// a peer and its later withdrawal, a record of another name, an expired
// record, bytes that are no record, and duplicates.
func mergeInput(t *testing.T, name string, now time.Time) [][]byte {
	t.Helper()
	_, a, _ := ed25519.GenerateKey(rand.Reader)
	_, b, _ := ed25519.GenerateKey(rand.Reader)
	a1 := signed(t, a, name, 1, now, "127.0.0.1:1")
	a2 := signed(t, a, name, 2, now, "127.0.0.1:2")
	b1 := signed(t, b, name, 1, now, "127.0.0.1:3")
	bw, err := record.Sign(b, record.Record{Name: name, PublicKey: b.Public().(ed25519.PublicKey), Seq: 2,
		Withdrawn: true, Issued: now, Expires: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	other := signed(t, nil, "acme/other", 1, now, "127.0.0.1:4")
	_, c, _ := ed25519.GenerateKey(rand.Reader)
	expired, err := record.Sign(c, record.Record{Name: name, PublicKey: c.Public().(ed25519.PublicKey), Seq: 1,
		Endpoints: []string{"127.0.0.1:5"}, Issued: now.Add(-2 * time.Minute), Expires: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{a1.Bytes(), b1.Bytes(), a2.Bytes(), other.Bytes(), []byte("not a record"),
		bw.Bytes(), expired.Bytes(), a2.Bytes(), b1.Bytes()}
}

func TestVerifiedNewestIsDHTNewest(t *testing.T) {
	const name = "acme/svc"
	now := time.Now()
	raws := mergeInput(t, name, now)
	wantRej := map[string]int{}
	want := summary(dht.Newest(name, raws, now, wantRej))
	if len(want) != 2 {
		t.Fatalf("dht.Newest kept %q; the input is wrong", want)
	}
	var v verifiedRecords
	for i := range 2 { // the second merge takes the signatures from the table
		rej := map[string]int{}
		got := summary(v.newest(name, raws, now, rej))
		if !slices.Equal(got, want) || !maps.Equal(rej, wantRej) {
			t.Errorf("merge %d: %q, rejected %v; dht.Newest: %q, rejected %v", i+1, got, rej, want, wantRej)
		}
	}
}

func TestVerifiedNewestChecksEachSignatureOnce(t *testing.T) {
	const name = "acme/svc"
	now := time.Now()
	raws := mergeInput(t, name, now)
	var v verifiedRecords
	v.newest(name, raws, now, nil)
	first := v.verifies // 7 distinct byte strings
	if first != 7 {
		t.Fatalf("first merge checked %d signatures, want 7 (one per distinct byte string)", first)
	}
	v.newest(name, raws, now, nil)
	// Only the refused ones (other name, garbage, expired) are checked again.
	if again := v.verifies - first; again != 3 {
		t.Errorf("second merge checked %d signatures, want 3 (the refused records only)", again)
	}

	// A remembered record is still checked against the clock, and against
	// the name asked for.
	rej := map[string]int{}
	if got := v.newest(name, raws, now.Add(time.Hour), rej); len(got) != 0 || rej["expired"] != 5 {
		t.Errorf("an hour later: kept %q, rejected %v; want none kept, 5 expired", summary(got), rej)
	}
	rej = map[string]int{}
	if got := v.newest("acme/else", raws, now, rej); len(got) != 0 || rej["wrong_name"] != 6 {
		t.Errorf("another name: kept %q, rejected %v; want none kept, 6 of the wrong name", summary(got), rej)
	}
}

func TestVerifiedTableIsBounded(t *testing.T) {
	var v verifiedRecords
	now := time.Now()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	r := signed(t, priv, "acme/svc", 1, now, "127.0.0.1:1")
	v.m = map[string]*record.Record{}
	for i := range verifiedMax {
		v.m[string(rune(i))+"x"] = r
	}
	v.newest("acme/svc", [][]byte{r.Bytes()}, now, nil)
	if len(v.m) != 1 {
		t.Errorf("a full table holds %d records after one more, want 1 (it starts again)", len(v.m))
	}
}

// BenchmarkFindMerge is the merge of one find of a 6-instance cell: the
// records from 3 storers, the node's recent ones and its own, through
// dht.Newest (the merge before verifiedRecords) and verifiedRecords.newest
// after its first find.
func BenchmarkFindMerge(b *testing.B) {
	const name = "acme/svc"
	now := time.Now()
	var set [][]byte
	for i := range 6 {
		set = append(set, signed(b, nil, name, 1, now, fmt.Sprintf("127.0.0.1:%d", 4000+i)).Bytes())
	}
	var raws [][]byte
	for range 4 { // 3 storers' answers and the recent records
		raws = append(raws, set...)
	}
	raws = append(raws, set[0]) // the node's own
	b.Run("dht.Newest", func(b *testing.B) {
		for b.Loop() {
			dht.Newest(name, raws, now, nil)
		}
	})
	b.Run("verified", func(b *testing.B) {
		var v verifiedRecords
		v.newest(name, raws, now, nil)
		for b.Loop() {
			v.newest(name, raws, now, nil)
		}
	})
}

// TestFindVerifiesOnce: a find's merge checks no signature that its gather
// (in dht, which checks what storers send) verified, and a node's second
// find of an unchanged set checks none at all.
func TestFindVerifiesOnce(t *testing.T) {
	c := newCluster(t, nil)
	inst := c.node(nil, "")
	announce(t, inst, "acme/once", service(t).Addr().String())
	finder := c.node(nil, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	count := func() int {
		finder.verified.mu.Lock()
		defer finder.verified.mu.Unlock()
		return finder.verified.verifies
	}
	var seq uint64
	for i := range 2 {
		before := count()
		res, err := finder.FindWith(ctx, "acme/once", FindOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Instances) != 1 {
			t.Fatalf("find %d: %+v", i+1, res.Instances)
		}
		switch n := count() - before; {
		case i == 0 && n != 0:
			t.Errorf("first find checked %d signatures in its merge, want 0 (its gather verified the one record)", n)
		case i == 1 && res.Instances[0].Seq != seq:
			// The instance republished in between: a new record to check.
		case i == 1 && n != 0:
			t.Errorf("second find checked %d signatures in its merge, want 0", n)
		}
		seq = res.Instances[0].Seq
	}
}
