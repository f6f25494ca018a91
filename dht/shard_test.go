package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

// instanceKey is the key of the i-th instance of a large test cell.
func instanceKey(i int) ed25519.PrivateKey {
	seed := sha256.Sum256(fmt.Appendf(nil, "instance %d", i))
	return ed25519.NewKeyFromSeed(seed[:])
}

// signer signs records of name by priv at the clock, with increasing
// sequence numbers.
func signer(t testing.TB, priv ed25519.PrivateKey, name string, seq *uint64, now func() time.Time) func(int) (*record.Record, error) {
	return func(shards int) (*record.Record, error) {
		*seq++
		return record.Sign(priv, record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey),
			Endpoints: []string{"192.0.2.1:9000"}, Seq: *seq, Issued: now(), Expires: now().Add(time.Minute), Shards: shards})
	}
}

// TestLargeCell publishes 400 instances of one cell from 40 nodes at
// once, with sets of at most 64 records (256 outside the test, which makes
// the same shapes with 4 times the instances and the work), and finds
// every one of them: after the burst, after a republish round and once the
// first records have expired. Without sharding a find returns at most 64.
func TestLargeCell(t *testing.T) {
	const instances, name = 400, "acme/large"
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 40, clk, func(c *Config) { c.Store.MaxPerName = 64 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	seqs := make([]uint64, instances)
	want := map[peer.ID]bool{}
	wantShard := map[peer.ID]string{}
	publish := func() {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		var mu sync.Mutex
		var errs []error
		for i := range instances {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				priv := instanceKey(i)
				r, _, err := nodes[i%len(nodes)].dht.PublishSigned(ctx, name, signer(t, priv, name, &seqs[i], clk.Now))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("instance %d: %w", i, err))
					return
				}
				want[r.Peer] = true
				wantShard[r.Peer] = fmt.Sprintf("%d/%d", r.Shard(), r.ShardCount())
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d publishes failed, first: %v", len(errs), errs[0])
		}
	}
	check := func(when string, lookups int) {
		for _, finder := range []*testNode{nodes[0], nodes[17], nodes[39]} {
			recs, st, err := finder.dht.Find(ctx, name, nil, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			got := peersOf(recs)
			missing := 0
			for p := range want {
				if !got[p] {
					missing++
				}
			}
			if missing > 0 {
				by := map[string]int{}
				for p := range want {
					if !got[p] {
						by[wantShard[p]]++
					}
				}
				t.Logf("missing, by shard/count: %v", by)
			}
			if missing > 0 || len(got) != instances {
				t.Fatalf("%s: finder %s found %d of %d instances (%d missing); shards %d, unanswered %v, rejected %v",
					when, finder.host.ID(), len(got), instances, missing, st.Shards, st.Unanswered, st.Rejected)
			}
			if st.Shards < 2 || len(st.Unanswered) > 0 {
				t.Fatalf("%s: shards %d, unanswered %v", when, st.Shards, st.Unanswered)
			}
			// Every shard lives at the base key's closest: one lookup
			// serves them all (with a lookup per shard, it was Shards).
			if st.Lookups > lookups {
				t.Fatalf("%s: %d lookups for %d shards, want at most %d", when, st.Lookups, st.Shards, lookups)
			}
			t.Logf("%s: %d found over %d shards, %d asked, %d lookups", when, len(got), st.Shards, st.Asked, st.Lookups)
		}
	}
	start := time.Now()
	publish()
	t.Logf("published in %v", time.Since(start))
	checkPlacement(t, nodes, name)
	check("after the first publishes", 1)
	t.Logf("checked at %v", time.Since(start))
	// A republish round: instances that joined before the cell grew move
	// to more shards; their older records stay live where they were.
	clk.Add(20 * time.Second)
	publish()
	check("after a republish", 1)
	// Past the first records' life, only the republished ones remain.
	clk.Add(45 * time.Second)
	check("after the first records expired", 1)
}

// checkPlacement checks that every shard of name's set lives at the peers
// closest to the set's base key: each of the agreeQuorum closest nodes
// holds records of every shard in use. (Placed at each shard key's own
// closest, a shard above 0 reached them only by chance.)
func checkPlacement(t *testing.T, nodes []*testNode, name string) {
	t.Helper()
	key := kb.ConvertKey(record.Key(name))
	byDist := slices.Clone(nodes)
	slices.SortFunc(byDist, func(a, b *testNode) int {
		return bytes.Compare(xor(key, kb.ConvertPeerID(a.host.ID())), xor(key, kb.ConvertPeerID(b.host.ID())))
	})
	inUse := 0
	for _, nd := range nodes {
		for shard := range record.MaxShards {
			if len(nd.dht.store.GetIn(name, nil, shard)) > 0 {
				inUse = max(inUse, shard+1)
			}
		}
	}
	if inUse < 2 {
		t.Fatalf("%d shards in use, want a sharded set", inUse)
	}
	for i, nd := range byDist[:agreeQuorum] {
		for shard := range inUse {
			if len(nd.dht.store.GetIn(name, nil, shard)) == 0 {
				t.Fatalf("the %d-th closest node to the base key holds no record of shard %d of %d", i, shard, inUse)
			}
		}
	}
}

// TestShardRefusals: a storer refuses a record in the wrong shard, one
// signed with fewer shards than the set advises (not a withdrawal), and
// a request for a shard out of range; each with a clear error.
func TestShardRefusals(t *testing.T) {
	now := time.Now()
	s := NewStore(StoreConfig{MaxPerName: 8, Now: func() time.Time { return now }})
	name := "acme/exchange"
	var seq uint64
	sign := func(i, shards int, withdrawn bool) []byte {
		priv := instanceKey(i)
		seq++
		r := record.Record{Name: name, PublicKey: priv.Public().(ed25519.PublicKey), Endpoints: []string{"192.0.2.1:9000"},
			Seq: seq, Issued: now, Expires: now.Add(time.Minute), Shards: shards}
		if withdrawn {
			r.Endpoints, r.Withdrawn = nil, true
		}
		return mustSign(t, priv, r)
	}
	// Find an instance of each shard of 2.
	var in0, in1 int
	for i := range 100 {
		switch record.ShardOf(peer.ID(peerOf(instanceKey(i))), 2) {
		case 0:
			in0 = i
		case 1:
			in1 = i
		}
	}
	if _, _, err := s.PutIn("", name, nil, 0, sign(in1, 2, false)); !errors.Is(err, record.ErrWrongShard) || !strings.Contains(err.Error(), "belongs in shard 1, not 0") {
		t.Fatalf("record of shard 1 put in shard 0: %v", err)
	}
	if _, _, err := s.PutIn("", name, nil, 1, sign(in1, 1, false)); !errors.Is(err, record.ErrWrongShard) {
		t.Fatalf("one-shard record put in shard 1: %v", err)
	}
	// Fill shard 0 to three quarters of 8 with one-shard records: the
	// set then advises 2, and refuses a one-shard record.
	filled := 0
	for i := 100; filled < 6; i++ {
		if _, adv, err := s.PutIn("", name, nil, 0, sign(i, 1, false)); err != nil || (filled < 5 && adv != 1) {
			t.Fatalf("fill %d: advice %d, %v", filled, adv, err)
		}
		filled++
	}
	if adv := s.Advice(name, nil, 0); adv != 2 {
		t.Fatalf("advice %d, want 2", adv)
	}
	_, adv, err := s.PutIn("", name, nil, 0, sign(in0, 1, false))
	if !errors.Is(err, ErrShardCount) || adv != 2 || !strings.Contains(err.Error(), "sign again with 2 shards") {
		t.Fatalf("one-shard record into a set advising 2: advice %d, %v", adv, err)
	}
	if got := s.Counters()["rejected_shard_count"]; got != 1 {
		t.Fatalf("rejected_shard_count %d", got)
	}
	// The same instance signed with 2 shards is taken; so is a
	// withdrawal with fewer.
	if _, _, err := s.PutIn("", name, nil, 0, sign(in0, 2, false)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutIn("", name, nil, 0, sign(in0, 1, true)); err != nil {
		t.Fatalf("withdrawal with fewer shards: %v", err)
	}
	// A record with an oversized or bad shard count does not sign.
	for _, n := range []int{3, 128, -2} {
		r := record.Record{Name: name, PublicKey: instanceKey(1).Public().(ed25519.PublicKey), Endpoints: []string{"192.0.2.1:9000"},
			Seq: 1, Issued: now, Expires: now.Add(time.Minute), Shards: n}
		if _, err := record.Sign(instanceKey(1), r); !errors.Is(err, record.ErrMalformed) || !strings.Contains(err.Error(), "shard count") {
			t.Fatalf("sign with %d shards: %v", n, err)
		}
	}
	if err := checkShard(64); err == nil || err.Error() != "shard 64 out of range (0 to 63)" {
		t.Fatalf("shard 64: %v", err)
	}
}

func peerOf(priv ed25519.PrivateKey) []byte {
	return append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, priv.Public().(ed25519.PublicKey)...)
}

// TestStorerShardRequests sends requests for bad shards to a storer.
func TestStorerShardRequests(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 2, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	priv := nodes[0].priv
	var seq uint64
	r, err := signer(t, priv, "acme/exchange", &seq, clk.Now)(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []request{
		{Op: opGet, Name: "acme/exchange", Shard: 64},
		{Op: opPut, Name: "acme/exchange", Shard: 1000, Record: r.Bytes()},
		{Op: opPut, Name: "acme/exchange", Shard: uint64(1 - r.Shard()), Record: r.Bytes()},
	} {
		_, err := nodes[0].dht.call(ctx, nodes[1].host.ID(), req)
		var re *RemoteError
		if !errors.As(err, &re) || !(strings.Contains(re.Msg, "out of range") || strings.Contains(re.Msg, "wrong shard")) {
			t.Fatalf("request %+v: %v", req.Shard, err)
		}
	}
}

// TestFinderDropsWrongShard: a record a storer serves for a shard it does
// not belong in is dropped and counted as wrong_shard; shard counts a
// storer advises that are not a power of two up to 64 start nothing.
func TestFinderDropsWrongShard(t *testing.T) {
	now := time.Now()
	var seq uint64
	var r *record.Record
	for i := 0; ; i++ {
		var err error
		if r, err = signer(t, instanceKey(i), "acme/exchange", &seq, func() time.Time { return now })(4); err != nil {
			t.Fatal(err)
		}
		if r.Shard() != 0 {
			break
		}
	}
	g := &gatherer{req: request{Name: "acme/exchange"}, shard: 0, rejected: map[string]int{}}
	if g.valid(r.Bytes(), now) != nil || g.rejected["wrong_shard"] != 1 {
		t.Fatalf("record of shard %d taken in shard 0: %v", r.Shard(), g.rejected)
	}
	g.shard = r.Shard()
	if g.valid(r.Bytes(), now) == nil {
		t.Fatalf("record refused in its own shard: %v", g.rejected)
	}
	f := &setGather{}
	for _, n := range []int{0, 3, 128, -1} {
		f.learn(n)
	}
	if f.count() != 0 {
		t.Fatalf("bad shard counts started %d gathers", f.count())
	}
}

// TestPublishSignedChecksTheSigner: a sign function that ignores the
// shard count asked for is an error, not a record in the wrong shard.
func TestPublishSignedChecksTheSigner(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 1, clk)
	var seq uint64
	sign := signer(t, nodes[0].priv, "acme/exchange", &seq, clk.Now)
	_, _, err := nodes[0].dht.PublishSigned(context.Background(), "acme/exchange", func(int) (*record.Record, error) { return sign(4) })
	if err == nil || !strings.Contains(err.Error(), "with 4 shards, want 1") {
		t.Fatalf("got %v", err)
	}
}

// TestFindAdviceSeesEveryShard: a storer holds every shard of a set, so
// its advice to a finder of shard 0 names the largest shard count among
// the records of any shard: a shard that split is found from shard 0 even
// before shard 0's own members have signed again.
func TestFindAdviceSeesEveryShard(t *testing.T) {
	now := time.Now()
	s := NewStore(StoreConfig{MaxPerName: 8, Now: func() time.Time { return now }})
	name := "acme/exchange"
	var seq uint64
	put := func(shards, shard int) {
		t.Helper()
		for i := 0; ; i++ {
			if record.ShardOf(peer.ID(peerOf(instanceKey(i))), shards) != shard {
				continue
			}
			r, err := signer(t, instanceKey(i), name, &seq, func() time.Time { return now })(shards)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.PutIn("", name, nil, shard, r.Bytes()); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	put(2, 0)
	put(4, 1)
	if adv := s.Advice(name, nil, 0); adv != 2 {
		t.Fatalf("shard 0's own advice %d, want 2", adv)
	}
	if adv := s.FindAdvice(name, nil, 0); adv != 4 {
		t.Fatalf("advice to a finder of shard 0: %d, want 4 (shard 1's records)", adv)
	}
	if adv := s.FindAdvice(name, nil, 2); adv != 4 {
		t.Fatalf("advice to a finder of empty shard 2: %d, want 4", adv)
	}
}

// TestNewestTakesVerified: records a gather verified are not verified
// again by Find (a large cell's 1,000 signatures), but their clock is
// checked again; raw bytes no gather verified still are.
func TestNewestTakesVerified(t *testing.T) {
	now := time.Now()
	var seq uint64
	name := "acme/exchange"
	r, err := signer(t, instanceKey(1), name, &seq, func() time.Time { return now })(1)
	if err != nil {
		t.Fatal(err)
	}
	// Stand-in bytes: were they verified, they would fail.
	junk := []byte("verified by a gather")
	verified := map[string]*record.Record{string(junk): r}
	if got := newest(name, [][]byte{junk}, verified, now, nil); len(got) != 1 || got[0] != r {
		t.Fatalf("a verified record was not taken as verified: %v", got)
	}
	rejected := map[string]int{}
	if got := newest(name, [][]byte{junk}, verified, now.Add(2*time.Minute), rejected); len(got) != 0 || rejected["expired"] != 1 {
		t.Fatalf("an expired verified record: %v, rejected %v", got, rejected)
	}
	rejected = map[string]int{}
	if got := newest(name, [][]byte{junk}, nil, now, rejected); len(got) != 0 || len(rejected) != 1 {
		t.Fatalf("unverified junk: %v, rejected %v", got, rejected)
	}
}

// testShardGatherer returns a gatherer of shard of acme/exchange on d,
// fed by hand (take), sharing m with the set's other shards.
func testShardGatherer(d *Node, shard int, m *moves) *gatherer {
	key := kb.ConvertKey(setKey("acme/exchange", nil))
	return &gatherer{d: d, req: request{Name: "acme/exchange", Shard: uint64(shard)}, key: key, shard: shard,
		done: make(chan struct{}), news: make(chan struct{}, 1), near: 0, moves: m,
		asked: map[peer.ID]bool{}, seen: map[string]*record.Record{}, seenPeer: map[peer.ID]bool{},
		rejected: map[string]int{}, rank: newRanker(d.host.ID(), key, 0)}
}

func agreed(g *gatherer) bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// TestShardAgreementIgnoresMovedInstances: after a split, the old record
// of an instance that moved stays at some storers of its old shard and
// not at others. Once its newer record is seen in the new shard, the old
// shard's storers that lack the old record still agree; while it is not,
// they do not.
func TestShardAgreementIgnoresMovedInstances(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	d := testNetwork(t, 1, clk)[0].dht
	now := clk.Now()
	var seq uint64
	// Instances 0 and 1 stay in shard 0 of 2; the moved one signed with 1
	// shard (in shard 0), then with 2, in shard 1.
	var stay [][]byte
	var moved *record.Record
	var old []byte
	for i := 0; len(stay) < 2 || moved == nil; i++ {
		sign := signer(t, instanceKey(i), "acme/exchange", &seq, func() time.Time { return now })
		r2, err := sign(2)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r2.Shard() == 0 && len(stay) < 2:
			stay = append(stay, r2.Bytes())
		case r2.Shard() == 1 && moved == nil:
			r1, err := sign(1)
			if err != nil {
				t.Fatal(err)
			}
			old = r1.Bytes()
			if moved, err = sign(2); err != nil {
				t.Fatal(err)
			}
		}
	}
	gs := make([]*gatherer, 2)
	// The set's moves ask later, from a goroutine of their own; here at
	// once (shard 1's lock is held, and shard 0's is free).
	m := &moves{retally: func(s int) { gs[s].retally() }}
	gs[0], gs[1] = testShardGatherer(d, 0, m), testShardGatherer(d, 1, m)
	feed := func(g *gatherer, from string, recs ...[]byte) {
		g.take(peer.ID(from), true, true, recs, g.checkAll(recs, now))
	}
	feed(gs[0], "storer-a", stay[0], stay[1], old)
	feed(gs[0], "storer-b", stay[0], stay[1])
	feed(gs[0], "storer-c", stay[0], stay[1])
	if agreed(gs[0]) {
		t.Fatal("shard 0 agreed without the old record of an instance not seen elsewhere")
	}
	for _, s := range []string{"storer-a", "storer-b", "storer-c"} {
		feed(gs[1], s, moved.Bytes())
	}
	if !agreed(gs[1]) {
		t.Fatal("shard 1 did not agree")
	}
	if !agreed(gs[0]) {
		t.Fatal("shard 0 did not agree once the moved instance's newer record was seen")
	}
}

// signedRaw returns n records of name, one-shard, from the first n keys
// of instanceKey, signed at now.
func signedRaw(t *testing.T, name string, n int, now time.Time) [][]byte {
	t.Helper()
	var seq uint64
	var recs [][]byte
	for i := range n {
		r, err := signer(t, instanceKey(i), name, &seq, func() time.Time { return now })(1)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r.Bytes())
	}
	return recs
}

// TestGatherVerifiesOnce: answers that bring the same records at the same
// time verify each of them once between them, and each gets every verdict.
func TestGatherVerifiesOnce(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	recs := signedRaw(t, "acme/exchange", 3, now)
	g := &gatherer{req: request{Name: "acme/exchange"}, seen: map[string]*record.Record{}, rejected: map[string]int{}}
	var mu sync.Mutex
	verified := 0
	g.verifyFn = func(raw []byte, now time.Time) (*record.Record, error) {
		mu.Lock()
		verified++
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // the answers overlap
		return g.verify(raw, now)
	}
	var wg sync.WaitGroup
	got := make([]map[string]verdict, 4)
	for i := range got {
		wg.Go(func() { got[i] = g.checkAll(recs, now) })
	}
	wg.Wait()
	if verified != len(recs) {
		t.Errorf("%d verifications of %d records by %d answers", verified, len(recs), len(got))
	}
	for i, v := range got {
		for _, r := range recs {
			if w, ok := v[string(r)]; !ok || w.err != nil || w.rec == nil {
				t.Errorf("answer %d: verdict %+v, present %v", i, w, ok)
			}
		}
	}
}

// TestShardsAskedOfCoreStorers: a peer met on the lookup's way is asked
// for shard 0 alone until it answers it as a core storer; the closest
// peers of a completed lookup are asked for every shard at once.
func TestShardsAskedOfCoreStorers(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	d := testNetwork(t, 1, clk)[0].dht
	s := newSetGather(d, t.Context(), d.spaces[0], "acme/exchange", nil, clk.Now)
	asked := func(shard int, p peer.ID) bool {
		g := s.started(shard)[0]
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.asked[p]
	}
	met, closest := peer.ID("met-on-the-way"), peer.ID("closest")
	s.learn(1)
	s.ask(met, false)
	s.learn(4)
	s.ask(closest, true)
	for shard := range 4 {
		if !asked(shard, closest) {
			t.Errorf("a closest peer of the lookup not asked for shard %d", shard)
		}
		if asked(shard, met) != (shard == 0) {
			t.Errorf("a peer met on the way asked for shard %d: %v before it answered as a core storer", shard, asked(shard, met))
		}
	}
	s.answeredCore(met)
	for shard := range 4 {
		if !asked(shard, met) {
			t.Errorf("a core storer not asked for shard %d", shard)
		}
	}
}

// shardedRecords signs a record of name for each of the first keys (from
// instanceKey) until every one of shards shards holds at least per of
// them, and returns them by shard.
func shardedRecords(t *testing.T, name string, shards, per int, now func() time.Time) map[int][]*record.Record {
	t.Helper()
	by := map[int][]*record.Record{}
	full := 0
	for i := 0; full < shards; i++ {
		var seq uint64
		r, err := signer(t, instanceKey(i), name, &seq, now)(shards)
		if err != nil {
			t.Fatal(err)
		}
		if len(by[r.Shard()]) < per {
			by[r.Shard()] = append(by[r.Shard()], r)
			if len(by[r.Shard()]) == per {
				full++
			}
		}
	}
	return by
}

// TestGetMoreShards: a GET of shard 0 marked MoreShards is answered with
// every other shard the storer holds, each in its own entry (an empty one
// for a shard it holds nothing of), and whole shards only, as far as the
// answer's bounds allow; unmarked, or of another shard, it is answered as
// before.
func TestGetMoreShards(t *testing.T) {
	const name = "acme/exchange"
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 2, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	storer := nodes[1].dht
	by := shardedRecords(t, name, 4, 2, clk.Now)
	for shard, recs := range by {
		if shard == 2 {
			continue // a shard this storer holds nothing of
		}
		for _, r := range recs {
			if _, _, err := storer.store.PutIn("test", name, nil, shard, r.Bytes()); err != nil {
				t.Fatal(err)
			}
		}
	}
	raws := func(recs []*record.Record) [][]byte {
		var out [][]byte
		for _, r := range recs {
			out = append(out, r.Bytes())
		}
		slices.SortFunc(out, bytes.Compare)
		return out
	}
	sorted := func(in [][]byte) [][]byte {
		out := slices.Clone(in)
		slices.SortFunc(out, bytes.Compare)
		return out
	}
	get := func(req request) *response {
		t.Helper()
		resp, err := nodes[0].dht.call(ctx, storer.host.ID(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := get(request{Op: opGet, Name: name, MoreShards: true})
	if len(resp.More) != 3 {
		t.Fatalf("more shards: %d entries, want 3 (shards 1 to 3)", len(resp.More))
	}
	if !slices.EqualFunc(sorted(resp.Records), raws(by[0]), bytes.Equal) {
		t.Fatalf("shard 0: %d records, want its %d", len(resp.Records), len(by[0]))
	}
	for shard := 1; shard < 4; shard++ {
		want := raws(by[shard])
		if shard == 2 {
			want = nil
		}
		if got := sorted(resp.More[shard-1]); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("shard %d: %d records, want %d", shard, len(got), len(want))
		}
	}
	if resp.Shards != 4 {
		t.Fatalf("advice %d, want 4", resp.Shards)
	}
	if resp := get(request{Op: opGet, Name: name}); resp.More != nil || len(resp.Records) != len(by[0]) {
		t.Fatalf("unmarked GET: %d more, %d records", len(resp.More), len(resp.Records))
	}
	if resp := get(request{Op: opGet, Name: name, Shard: 3, MoreShards: true}); resp.More != nil ||
		!slices.EqualFunc(sorted(resp.Records), raws(by[3]), bytes.Equal) {
		t.Fatalf("GET of shard 3 marked MoreShards: %d more, %d records", len(resp.More), len(resp.Records))
	}

	// Bounds: a shard that would take the answer past them is left out,
	// with every shard after it.
	req := request{Op: opGet, Name: name, MoreShards: true}
	if more, n := storer.moreShards(req, moreMaxRecords-len(by[1])+1, 0); more != nil || n != moreMaxRecords-len(by[1])+1 {
		t.Fatalf("records bound: %d shards added, %d records", len(more), n)
	}
	if more, _ := storer.moreShards(req, 0, moreMaxBytes-len(by[1][0].Bytes())); more != nil {
		t.Fatalf("bytes bound: %d shards added", len(more))
	}
	if more, n := storer.moreShards(req, moreMaxRecords-len(by[1])-len(by[3])+1, 0); len(more) != 2 || n != moreMaxRecords-len(by[3])+1 {
		t.Fatalf("records bound: %d shards added, %d records; want shards 1 and 2 (empty)", len(more), n)
	}
}

// TestFindAsksEachStorerOnce: a find of a sharded set sends each storer
// one GET, which brings every shard the storer holds, on its first find
// (when it does not know the shard count yet) and on a repeat; against
// storers that predate MoreShards it asks each shard on its own and still
// finds every instance.
func TestFindAsksEachStorerOnce(t *testing.T) {
	const name, instances = "acme/sharded", 40
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 12, clk, func(c *Config) { c.Store.MaxPerName = 8 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range instances {
		var seq uint64
		if _, _, err := nodes[i%10].dht.PublishSigned(ctx, name, signer(t, instanceKey(i), name, &seq, clk.Now)); err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	// Publishes of the first instances signed fewer shards than the set
	// came to: republish so that every instance is in its final shard.
	for i := range instances {
		seq := uint64(100)
		if _, _, err := nodes[i%10].dht.PublishSigned(ctx, name, signer(t, instanceKey(i), name, &seq, clk.Now)); err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	find := func(when string, finder *testNode) (gets map[int]uint64) {
		t.Helper()
		before := make([]uint64, len(nodes))
		for i, nd := range nodes {
			before[i] = nd.dht.Counters()["get_received"]
		}
		recs, st, err := finder.dht.Find(ctx, name, nil, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(peersOf(recs)); got != instances || st.Shards < 4 || len(st.Unanswered) > 0 {
			t.Fatalf("%s: %d of %d instances over %d shards, unanswered %v", when, got, instances, st.Shards, st.Unanswered)
		}
		gets = map[int]uint64{}
		for i, nd := range nodes {
			if n := nd.dht.Counters()["get_received"] - before[i]; n > 0 {
				gets[i] = n
			}
		}
		t.Logf("%s: %d shards, GETs received by node: %v", when, st.Shards, gets)
		return gets
	}
	once := func(when string, gets map[int]uint64) {
		t.Helper()
		for i, n := range gets {
			if n > 1 {
				t.Errorf("%s: node %d received %d GETs from one find, want 1", when, i, n)
			}
		}
	}
	once("first find", find("first find", nodes[11]))
	once("repeated find", find("repeated find", nodes[11]))

	for _, nd := range nodes {
		nd.dht.oldStorer = true
	}
	most := uint64(0)
	for _, n := range find("first find, older storers", nodes[10]) {
		most = max(most, n)
	}
	if most < 2 {
		t.Fatalf("older storers: at most %d GETs per storer, want one per shard at the core storers", most)
	}
}

// TestAgreementNeedsCoreStorers: answers of the closest peers of a lookup
// (trusted) that say they are not core storers of the set (peripheral
// holders: what publishers sent them on their way) do not end a find,
// however many agree; three core storers' do.
func TestAgreementNeedsCoreStorers(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	d := testNetwork(t, 1, clk)[0].dht
	now := clk.Now()
	recs := signedRaw(t, "acme/exchange", 2, now)
	g := testShardGatherer(d, 0, nil)
	for _, from := range []string{"peripheral-a", "peripheral-b", "peripheral-c", "peripheral-d"} {
		g.take(peer.ID(from), true, false, recs, g.checkAll(recs, now))
	}
	if agreed(g) {
		t.Fatal("four trusted answers of peers that are not core storers ended the find")
	}
	for _, from := range []string{"storer-a", "storer-b", "storer-c"} {
		g.take(peer.ID(from), true, true, recs, g.checkAll(recs, now))
	}
	if !agreed(g) {
		t.Fatal("three core storers' answers did not end the find")
	}
}
