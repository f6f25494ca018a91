package dht

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/cellnode/cellnode/internal/poll"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/libp2p/go-msgio"
	ma "github.com/multiformats/go-multiaddr"
)

// clock is a settable clock shared by every node of a test network.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type testNode struct {
	dht  *Node
	host host.Host
	priv ed25519.PrivateKey
}

// testNetwork starts n DHT servers on a mocknet, all linked, each connected
// to node 0, with refreshed routing tables.
// Each of opts, if any, changes the nodes' Config.
func testNetwork(t *testing.T, n int, clk *clock, opts ...func(*Config)) []*testNode {
	t.Helper()
	nodes, _ := testMocknet(t, n, clk, opts...)
	return nodes
}

// testMocknet is testNetwork, with its mocknet for nodes to come.
func testMocknet(t *testing.T, n int, clk *clock, opts ...func(*Config)) ([]*testNode, mocknet.Mocknet) {
	t.Helper()
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	nodes := make([]*testNode, n)
	for i := range nodes {
		sk, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		// 100::/64 is the discard prefix; mocknet never touches a real network.
		h, err := mn.AddPeer(sk, ma.StringCast(fmt.Sprintf("/ip6/100::%x/tcp/4242", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := sk.Raw()
		cfg := Config{Mode: ModeServer, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true}
		for _, o := range opts {
			o(&cfg)
		}
		d, err := New(h, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		nodes[i] = &testNode{dht: d, host: h, priv: ed25519.PrivateKey(raw)}
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i < n; i++ {
		if err := nodes[i].host.Connect(ctx, peer.AddrInfo{ID: nodes[0].host.ID()}); err != nil {
			t.Fatal(err)
		}
	}
	// Identify fills the routing tables after the connections are up: wait
	// for it, then refresh.
	for _, nd := range nodes {
		poll.T(t, "a routing table with a peer", func() bool { return n == 1 || nd.dht.Kad().RoutingTable().Size() > 0 })
	}
	for _, nd := range nodes {
		if err := <-nd.dht.Kad().RefreshRoutingTable(); err != nil && n > 1 {
			t.Fatalf("refresh: %v", err)
		}
	}
	return nodes, mn
}

func (n *testNode) record(t *testing.T, name string, seq uint64, now time.Time, endpoint string) *record.Record {
	t.Helper()
	r, err := record.Sign(n.priv, record.Record{
		Name: name, PublicKey: n.priv.Public().(ed25519.PublicKey), Endpoints: []string{endpoint},
		Seq: seq, Issued: now, Expires: now.Add(60 * time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func peersOf(recs []*record.Record) map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, r := range recs {
		m[r.Peer] = true
	}
	return m
}

func TestPublishFind(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 16, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	want := map[peer.ID]bool{}
	for i, nd := range nodes[1:4] {
		st, err := nd.dht.Publish(ctx, nd.record(t, "acme/exchange", 1, clk.Now(), "127.0.0.1:900"+string(rune('0'+i))))
		if err != nil {
			t.Fatal(err)
		}
		if st.Stored == 0 {
			t.Fatalf("publish stored nowhere: %+v", st)
		}
		want[nd.host.ID()] = true
	}
	if _, err := nodes[5].dht.Publish(ctx, nodes[5].record(t, "acme/other", 1, clk.Now(), "127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	for _, finder := range []*testNode{nodes[0], nodes[9], nodes[15]} {
		recs, st, err := finder.dht.Find(ctx, "acme/exchange", nil, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		got := peersOf(recs)
		if len(got) != 3 || !got[nodes[1].host.ID()] || !got[nodes[2].host.ID()] || !got[nodes[3].host.ID()] {
			t.Fatalf("finder %s got %d records %v, stats %+v", finder.host.ID(), len(recs), got, st)
		}
	}

	// A newer record replaces the older one everywhere; the older is refused.
	n1 := nodes[1]
	if _, err := n1.dht.Publish(ctx, n1.record(t, "acme/exchange", 5, clk.Now(), "127.0.0.1:7777")); err != nil {
		t.Fatal(err)
	}
	// Every peer holding the newer record refuses the older one; a likely
	// storer met on the way that never got the newer one may take it, but
	// finders keep the newest.
	if st, err := n1.dht.Publish(ctx, n1.record(t, "acme/exchange", 4, clk.Now(), "127.0.0.1:6666")); err == nil && st.Stored >= st.Sent {
		t.Fatalf("an older sequence number was stored everywhere: %+v", st)
	} else if re := (*RemoteError)(nil); err != nil && !errors.As(err, &re) && !errors.Is(err, record.ErrStale) {
		t.Fatalf("older sequence: %v", err)
	}
	recs, _, _ := nodes[12].dht.Find(ctx, "acme/exchange", nil, clk.Now)
	for _, r := range recs {
		if r.Peer == n1.host.ID() && (r.Seq != 5 || r.Endpoints[0] != "127.0.0.1:7777") {
			t.Fatalf("stale record served: %+v", r)
		}
	}

	// A withdrawal hides the instance.
	w, err := record.Sign(n1.priv, record.Record{Name: "acme/exchange", PublicKey: n1.priv.Public().(ed25519.PublicKey),
		Seq: 6, Issued: clk.Now(), Expires: clk.Now().Add(time.Minute), Withdrawn: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.dht.Publish(ctx, w); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = nodes[7].dht.Find(ctx, "acme/exchange", nil, clk.Now)
	if got := peersOf(recs); len(got) != 2 || got[n1.host.ID()] {
		t.Fatalf("after withdrawal: %v", got)
	}

	// Past 60 s + skew nothing is served or returned, without anybody
	// withdrawing: storers drop on serve and finders check again.
	clk.Add(record.MaxLifetime + record.MaxSkew + time.Millisecond)
	recs, _, err = nodes[9].dht.Find(ctx, "acme/exchange", nil, clk.Now)
	if err != nil || len(recs) != 0 {
		t.Fatalf("after expiry: %d records, err %v", len(recs), err)
	}
}

// TestStorerRejects sends bad records straight to a storer.
func TestStorerRejects(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 2, clk)
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	good := a.record(t, "acme/x", 10, clk.Now(), "h:1")
	for _, tc := range []struct {
		name string
		cell string
		raw  []byte
	}{
		{"another name", "acme/y", good.Bytes()},
		{"bad signature", "acme/x", append(good.Bytes()[:len(good.Bytes())-1:len(good.Bytes())-1], good.Bytes()[len(good.Bytes())-1]^1)},
		{"garbage", "acme/x", []byte("junk")},
		{"oversized", "acme/x", make([]byte, record.MaxRecordSize+100)},
		{"invalid name", "ACME", good.Bytes()},
		{"expired", "acme/x", a.record(t, "acme/x", 11, clk.Now().Add(-2*time.Minute), "h:1").Bytes()},
		{"future", "acme/x", a.record(t, "acme/x", 12, clk.Now().Add(time.Minute), "h:1").Bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.dht.call(ctx, b.host.ID(), request{Op: opPut, Name: tc.cell, Record: tc.raw})
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("storer accepted it: %v", err)
			}
		})
	}
	if n := b.dht.Store().Len(); n != 0 {
		t.Fatalf("storer holds %d records", n)
	}
	c := b.dht.Counters()
	if c["store_rejected_wrong_name"] == 0 || c["store_rejected_bad_signature"] == 0 || c["store_rejected_expired"] == 0 || c["store_rejected_future"] == 0 {
		t.Fatalf("rejections not counted: %v", c)
	}
}

// TestFinderRejects has a lying storer serve records that its own store
// would never hold: the finder must drop every one of them and count it.
func TestFinderRejects(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 3, clk)
	liar, publisher, finder := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	good := publisher.record(t, "acme/x", 1, clk.Now(), "h:1")
	other := publisher.record(t, "acme/y", 2, clk.Now(), "h:1")
	old := publisher.record(t, "acme/x", 3, clk.Now().Add(-2*time.Minute), "h:1")
	forged := append([]byte{}, good.Bytes()...)
	forged[len(forged)-1] ^= 1
	liar.host.SetStreamHandler(ProtocolID, func(s network.Stream) {
		defer s.Close()
		if _, err := msgio.NewVarintReaderSize(s, maxRequestSize).ReadMsg(); err != nil {
			_ = s.Reset()
			return
		}
		out, _ := msgEnc.Marshal(response{Records: [][]byte{other.Bytes(), old.Bytes(), forged}, Core: true})
		_ = msgio.NewVarintWriter(s).WriteMsg(out)
	})
	recs, st, err := finder.dht.Find(ctx, "acme/x", nil, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 0 {
		t.Fatalf("finder returned %d planted records", len(recs))
	}
	if st.Rejected["wrong_name"] != 1 || st.Rejected["expired"] != 1 || st.Rejected["bad_signature"] != 1 {
		t.Fatalf("rejections: %v", st.Rejected)
	}
	// CollectSeen tells of none of them.
	var told atomic.Int32
	if _, verified, _, err := finder.dht.CollectSeen(ctx, "acme/x", nil, clk.Now, func(*record.Record) { told.Add(1) }); err != nil || len(verified) != 0 {
		t.Fatalf("CollectSeen: %d verified, %v", len(verified), err)
	}
	if told.Load() != 0 {
		t.Fatalf("told of %d planted records", told.Load())
	}
}

func TestFindNoPeers(t *testing.T) {
	clk := &clock{t: time.Now()}
	mn := mocknet.New()
	defer mn.Close()
	h, _ := mn.GenPeer()
	d, err := New(h, Config{Mode: ModeClient, Flat: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, _, err = d.Find(context.Background(), "acme/x", nil, clk.Now)
	if !errors.Is(err, ErrNoPeers) {
		t.Fatalf("Find with an empty routing table: %v", err)
	}
	if _, _, err := d.Find(context.Background(), "Bad Name", nil, clk.Now); !errors.Is(err, record.ErrInvalidName) {
		t.Fatalf("Find with a bad name: %v", err)
	}
}

// TestValidator covers the kad-dht value validator of the cell namespace:
// a record is valid only under its own /cell/<name>/<peer> key.
func TestValidator(t *testing.T) {
	clk := &clock{t: t0.Add(time.Second)}
	v := Validator{Now: clk.Now}
	priv, other := testKey(1), testKey(2)
	rec, err := record.Sign(priv, testRecord(priv))
	if err != nil {
		t.Fatal(err)
	}
	otherRec, _ := record.Sign(other, testRecord(other))
	key := ValueKey(rec)
	for _, tc := range []struct {
		name string
		key  string
		raw  []byte
		want error
	}{
		{"own key", key, rec.Bytes(), nil},
		{"another peer's key", ValueKey(otherRec), rec.Bytes(), record.ErrPeerMismatch},
		{"another name", "/cell/acme/other/" + rec.Peer.String(), rec.Bytes(), record.ErrWrongName},
		{"no peer part", "/cell/acme", rec.Bytes(), record.ErrWrongName},
		{"garbage", key, []byte("x"), record.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate(tc.key, tc.raw)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
	clk.Add(2 * time.Minute)
	if err := v.Validate(key, rec.Bytes()); !errors.Is(err, record.ErrExpired) {
		t.Fatalf("expired record: %v", err)
	}
	newer := testRecord(priv)
	newer.Seq++
	nr, _ := record.Sign(priv, newer)
	if i, err := v.Select(key, [][]byte{rec.Bytes(), nr.Bytes(), rec.Bytes()}); err != nil || i != 1 {
		t.Fatalf("Select = %d, %v; want 1", i, err)
	}
	if i, _ := v.Select(key, [][]byte{rec.Bytes(), rec.Bytes()}); i != 0 {
		t.Fatalf("Select on a tie = %d, want 0", i)
	}
}

// A find asks likely storers while the lookup runs and remembers those that
// answered: a repeated find asks them straight away, skips the lookup, and
// gets the same set; a publish reaches storers met on the way as well as
// the lookup's closest peers.
func TestRepeatFindAsksRememberedStorers(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 24, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[peer.ID]bool{}
	for i, nd := range nodes[1:4] {
		st, err := nd.dht.Publish(ctx, nd.record(t, "acme/exchange", 1, clk.Now(), fmt.Sprintf("127.0.0.1:90%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent < st.Closest || st.Stored == 0 || st.Stored > st.Sent {
			t.Fatalf("publish stats inconsistent: %+v", st)
		}
		want[nd.host.ID()] = true
	}
	finder := nodes[20].dht
	first, st1, err := finder.Find(ctx, "acme/exchange", nil, clk.Now)
	if err != nil || len(peersOf(first)) != 3 {
		t.Fatalf("first find: %d records, %v, %+v", len(first), err, st1)
	}
	if st1.Cached {
		t.Fatalf("first find claims a cache: %+v", st1)
	}
	// A remembered storer slower than the straggler wait (a loaded
	// machine under -race) sends the find on to a lookup, as it should;
	// so the repeat is tried a few times, and one must end on the
	// remembered storers alone.
	var again []*record.Record
	var st2 FindStats
	for try := 0; try < 5; try++ {
		again, st2, err = finder.Find(ctx, "acme/exchange", nil, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		if st2.Cached {
			break
		}
	}
	if !st2.Cached || st2.Closest != 0 || st2.Asked > cachedAsk {
		t.Fatalf("repeated finds did not use the remembered storers: %+v", st2)
	}
	for p := range peersOf(again) {
		if !want[p] {
			t.Fatalf("repeated find returned %s, not published", p)
		}
	}
	if len(peersOf(again)) != 3 {
		t.Fatalf("repeated find: %d records", len(again))
	}
	// Past the cache's life the find looks up again.
	clk.Add(time.Second)
	finder.spaces[0].closest.put(record.Key("acme/exchange"), nil, time.Now().Add(-2*cacheTTL))
	_, st3, err := finder.Find(ctx, "acme/exchange", nil, clk.Now)
	if err != nil || st3.Cached {
		t.Fatalf("find after the cache expired: %v, %+v", err, st3)
	}
}

// A fresh node estimates the network's size from its own routing table, so
// that a one-shot find can stop early before kad-dht has an estimate.
func TestNetworkSizeFromTable(t *testing.T) {
	const n = 48
	nodes := testNetwork(t, n, &clock{t: time.Now()})
	var est []int
	for _, nd := range nodes {
		est = append(est, nd.dht.networkSizeFromTable(nd.dht.spaces[0]))
	}
	slices.Sort(est)
	t.Logf("estimates for %d nodes: %v", n, est)
	if med := est[len(est)/2]; med < n/3 || med > 3*n {
		t.Fatalf("median estimate %d for %d nodes (all: %v)", med, n, est)
	}
	if p := nodes[0].dht.nearPrefix(nodes[0].dht.spaces[0]); p < 0 {
		t.Fatalf("no near prefix with a full table: %d", p)
	}
	lone := testNetwork(t, 1, &clock{t: time.Now()})[0].dht
	if got := lone.networkSizeFromTable(lone.spaces[0]); got != 0 {
		t.Fatalf("estimate %d from an empty table", got)
	}
}

// A one-shot finder, whose routing table holds its bootstrap peer alone
// (it does not refresh) and which so has no estimate of the network's size
// when its find begins, still ends the find once three near storers agree:
// it estimates the size from the peers its lookup hears of. Without that
// it waited for kad-dht's whole lookup, a connection to each of the
// closest peers (16 to 22 round trips on the netns benchmark).
func TestOneShotFindEndsByAgreement(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 40, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, nd := range nodes[1:4] {
		if _, err := nd.dht.Publish(ctx, nd.record(t, "acme/exchange", 1, clk.Now(), fmt.Sprintf("127.0.0.1:90%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := mn.AddPeer(sk, ma.StringCast("/ip6/100::ffff/tcp/4242"))
	if err != nil {
		t.Fatal(err)
	}
	// The finder's links take time, as a real network's do: the lookup's
	// hops then take longer than the storers' answers, as they did there.
	mn.SetLinkDefaults(mocknet.LinkOptions{Latency: 10 * time.Millisecond})
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	finder, err := New(h, Config{Mode: ModeClient, Flat: true, BucketSize: 4, Store: StoreConfig{Now: clk.Now}, DisableAutoRefresh: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { finder.Close() })
	if err := h.Connect(ctx, peer.AddrInfo{ID: nodes[0].host.ID()}); err != nil {
		t.Fatal(err)
	}
	poll.T(t, "the bootstrap peer in the finder's table", func() bool { return finder.Kad().RoutingTable().Size() > 0 })
	if p := finder.nearPrefix(finder.spaces[0]); p >= 0 {
		t.Fatalf("a table of %d peers gives near prefix %d: the test needs a finder with no size estimate", finder.Kad().RoutingTable().Size(), p)
	}
	recs, st, err := finder.Find(ctx, "acme/exchange", nil, clk.Now)
	if err != nil || len(peersOf(recs)) != 3 {
		t.Fatalf("find: %d records, %v, %+v", len(recs), err, st)
	}
	if !st.Early {
		t.Fatalf("the find waited for the whole lookup (asked %d, %d answered, lookup %v): no early end by agreement", st.Asked, st.Responded, st.Lookup)
	}
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// testKey returns a deterministic key; n picks one of several.
func testKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

// testRecord is an unsigned record of acme/exchange by priv, live at t0.
func testRecord(priv ed25519.PrivateKey) record.Record {
	return record.Record{
		Name:      "acme/exchange",
		PublicKey: priv.Public().(ed25519.PublicKey),
		Endpoints: []string{"192.0.2.7:9000", "unix:/run/cells/exchange.sock"},
		Region:    "eu-west",
		Seq:       1_795_000_000_000_000,
		Issued:    t0,
		Expires:   t0.Add(60 * time.Second),
	}
}

func mustSign(t testing.TB, priv ed25519.PrivateKey, r record.Record) []byte {
	t.Helper()
	s, err := record.Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	return s.Bytes()
}

// TestCollectSeen: CollectSeen tells of each valid record once, as its
// first answer comes in, and hands back the gathered records verified
// (TestFinderRejects: it tells of no invalid one).
func TestCollectSeen(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes := testNetwork(t, 12, clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[peer.ID]bool{}
	for i, nd := range nodes[1:4] {
		if _, err := nd.dht.Publish(ctx, nd.record(t, "acme/seen", 1, clk.Now(), fmt.Sprintf("192.0.2.%d:80", i+1))); err != nil {
			t.Fatal(err)
		}
		want[nd.host.ID()] = true
	}
	var mu sync.Mutex
	told := map[string]int{}
	raws, verified, st, err := nodes[9].dht.CollectSeen(ctx, "acme/seen", nil, clk.Now, func(r *record.Record) {
		mu.Lock()
		defer mu.Unlock()
		told[string(r.Bytes())]++
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 3 {
		t.Fatalf("told of %d records, want 3 (stats %+v)", len(told), st)
	}
	for raw, n := range told {
		r, err := record.Verify([]byte(raw), "acme/seen", clk.Now())
		if err != nil || !want[r.Peer] || n != 1 {
			t.Fatalf("told %d times of %v (%v)", n, r, err)
		}
		if verified[raw] == nil {
			t.Fatal("a record told of is not among the verified")
		}
	}
	for _, raw := range raws {
		if v := verified[string(raw)]; v != nil && !bytes.Equal(v.Bytes(), raw) {
			t.Fatal("a verified record is filed under other bytes")
		}
	}
}
