package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	dto "github.com/prometheus/client_model/go"
)

func probesCounted(n *Node, started string) int {
	var m dto.Metric
	if err := n.metrics.findProbes.WithLabelValues(started).Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

// TestEarlyProbeTakenByRank: a record seen during the gather has its
// endpoint dialled at once, and rank takes that probe instead of dialling
// again. Without early probes the dial would not start before rank.
func TestEarlyProbeTakenByRank(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{}
	n.probes.dial = f.dial
	r := signed(t, nil, "acme/x", 1, time.Now(), "192.0.2.1:80")
	e := n.startEarly(t.Context(), nil)
	defer e.close()
	e.saw(r)
	waitFor(t, "the early dial", func() bool { return f.count("192.0.2.1:80") == 1 })
	e.saw(r) // the same record from a second storer: no second dial
	e.stop()
	ins := n.rank(t.Context(), []*record.Record{r}, e)
	if len(ins) != 1 || !ins[0].Reachable || ins[0].Best != "192.0.2.1:80" {
		t.Fatalf("instance: %+v", ins)
	}
	if got := f.total(); got != 1 {
		t.Fatalf("%d dials, want 1", got)
	}
	if early, after := probesCounted(n, "early"), probesCounted(n, "after"); early != 1 || after != 0 {
		t.Fatalf("counted early %d, after %d; want 1 and 0", early, after)
	}
}

// TestEarlyProbeSuperseded: the early probe of a record that a newer one
// of the same instance replaces in the merge is not reported; the newer
// record's endpoint is dialled by rank.
func TestEarlyProbeSuperseded(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{}
	n.probes.dial = f.dial
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	old := signed(t, priv, "acme/x", 1, now, "192.0.2.1:80")
	newer := signed(t, priv, "acme/x", 2, now, "192.0.2.2:80")
	e := n.startEarly(t.Context(), nil)
	defer e.close()
	e.saw(old)
	waitFor(t, "the early dial", func() bool { return f.count("192.0.2.1:80") == 1 })
	e.stop()
	ins := n.rank(t.Context(), []*record.Record{newer}, e)
	if len(ins) != 1 || !ins[0].Reachable || ins[0].Best != "192.0.2.2:80" || ins[0].Seq != 2 {
		t.Fatalf("instance: %+v", ins)
	}
	if _, ok := ins[0].Probe["192.0.2.1:80"]; ok {
		t.Fatalf("the superseded record's endpoint is reported: %v", ins[0].Probe)
	}
	if got := f.count("192.0.2.2:80"); got != 1 {
		t.Fatalf("%d dials of the newer endpoint, want 1", got)
	}
	if got := probesCounted(n, "early_unused"); got != 1 {
		t.Fatalf("early_unused %d, want 1", got)
	}
}

// TestEarlyProbeRules: records whose endpoints need a check first, or that
// a find would not probe at all, get no early dial; rank still reports
// each of them by its rules.
func TestEarlyProbeRules(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{dead: map[string]bool{}}
	n.probes.dial = f.dial
	now := time.Now()
	withdrawn := signed(t, nil, "acme/x", 1, now, "192.0.2.5:80")
	withdrawn.Withdrawn = true
	remembered := signed(t, nil, "acme/x", 1, now, "192.0.2.6:80")
	n.probes.remember(memKey(remembered, "192.0.2.6:80"), failure{at: n.now(), why: "refused"})
	cases := []struct {
		name string
		r    *record.Record
		pins []ed25519.PublicKey
		why  string // what rank then says of the endpoint; "" for no rank
	}{
		{"loopback", signed(t, nil, "acme/x", 1, now, "127.0.0.1:80"), nil, "skipped: a loopback endpoint"},
		{"localhost", signed(t, nil, "acme/x", 1, now, "localhost:80"), nil, "skipped: a loopback endpoint"},
		{"unix", signed(t, nil, "acme/x", 1, now, "unix:/tmp/x.sock"), nil, "skipped: a unix socket"},
		{"withdrawn", withdrawn, nil, ""},
		{"remembered", remembered, nil, "skipped: unreachable"},
		{"not pinned", signed(t, nil, "acme/x", 1, now, "192.0.2.7:80"), []ed25519.PublicKey{ed25519.PublicKey(make([]byte, 32))}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := n.startEarly(t.Context(), tc.pins)
			defer e.close()
			e.saw(tc.r)
			if got := e.started(); got != 0 {
				t.Fatalf("%d early probes", got)
			}
			if tc.why == "" {
				return
			}
			e.stop()
			ins := n.rank(t.Context(), []*record.Record{tc.r}, e)
			ep := tc.r.Endpoints[0]
			if ins[0].Reachable || !strings.Contains(ins[0].Probe[ep], tc.why) {
				t.Fatalf("rank says %+v, want %q", ins[0], tc.why)
			}
		})
	}
	if got := f.total(); got != 0 {
		t.Fatalf("%d dials", got)
	}
	var none *earlyProbes // a find without early probes
	none.saw(cases[0].r)
	none.stop()
	none.close()
	stopped := n.startEarly(t.Context(), nil)
	stopped.stop()
	stopped.saw(signed(t, nil, "acme/x", 1, now, "192.0.2.8:80"))
	if stopped.started() != 0 {
		t.Fatal("a record seen after the gather ended was dialled early")
	}
}

// TestEarlyProbeBudget: early probes take at most maxEarlyProbes of the
// find's MaxProbesPerFind, and rank makes the rest; no find dials more.
func TestEarlyProbeBudget(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{}
	n.probes.dial, n.probes.timeout = f.dial, time.Minute
	now := time.Now()
	var recs []*record.Record
	for i := range 100 {
		recs = append(recs, signed(t, nil, "acme/x", 1, now, fmt.Sprintf("192.0.2.%d:80", i+1)))
	}
	e := n.startEarly(t.Context(), nil)
	defer e.close()
	for _, r := range recs {
		e.saw(r)
	}
	if got := e.started(); got != maxEarlyProbes {
		t.Fatalf("%d early probes, want %d", got, maxEarlyProbes)
	}
	e.stop()
	ins := n.rank(t.Context(), recs, e)
	if got := f.total(); got != MaxProbesPerFind {
		t.Fatalf("%d dials, want %d", got, MaxProbesPerFind)
	}
	reachable := 0
	for _, in := range ins {
		if in.Reachable {
			reachable++
		}
	}
	if reachable != MaxProbesPerFind {
		t.Fatalf("%d reachable, want %d", reachable, MaxProbesPerFind)
	}
}

// TestEarlyProbeFailure: an early probe that gets no answer is reported and
// remembered like rank's own, so the next find skips the endpoint; one cut
// off by the find's end is not remembered.
func TestEarlyProbeFailure(t *testing.T) {
	n := probeNode(t, Config{})
	f := &fakeDialer{dead: map[string]bool{"192.0.2.1:80": true, "192.0.2.2:80": true}}
	n.probes.dial, n.probes.timeout = f.dial, 50*time.Millisecond
	now := time.Now()
	dead := signed(t, nil, "acme/x", 1, now, "192.0.2.1:80")
	e := n.startEarly(t.Context(), nil)
	e.saw(dead)
	e.stop()
	ins := n.rank(t.Context(), []*record.Record{dead}, e)
	e.close()
	if ins[0].Reachable || !strings.Contains(ins[0].Probe["192.0.2.1:80"], "no answer within 50ms") {
		t.Fatalf("first find: %+v", ins[0])
	}
	ins = n.rank(t.Context(), []*record.Record{dead}, nil)
	if !strings.Contains(ins[0].Probe["192.0.2.1:80"], "skipped: unreachable") {
		t.Fatalf("second find: %+v", ins[0])
	}
	if got := f.count("192.0.2.1:80"); got != 1 {
		t.Fatalf("%d dials of the dead endpoint, want 1", got)
	}

	n.probes.timeout = time.Minute
	cut := signed(t, nil, "acme/x", 1, now, "192.0.2.2:80")
	e = n.startEarly(t.Context(), nil)
	e.saw(cut)
	waitFor(t, "the early dial", func() bool { return f.count("192.0.2.2:80") == 1 })
	t0 := e.take(targetKey(Endpoint{Network: "tcp", Address: "192.0.2.2:80"}, true))
	if t0 == nil {
		t.Fatal("no early probe under the endpoint's key")
	}
	e.close() // the find ended without ranking (say, its gather failed)
	<-t0.done
	if t0.remembers() {
		t.Fatalf("a probe cut off by the find's end would be remembered: %v", t0.err)
	}
}

// TestFindProbesEarly: a find over a real DHT dials the endpoint of a
// record while its gather runs, and ranks with that dial alone.
func TestFindProbesEarly(t *testing.T) {
	c := newCluster(t, nil)
	for range 3 {
		c.node(nil, "")
	}
	pub := c.node(nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A record of another machine's instance, and one of pub's own
	// instance on loopback: pub is checked to run on this machine (the
	// nodes here all do) while the find gathers, then probed.
	for _, r := range []*record.Record{
		signed(t, nil, "acme/early", 1, time.Now(), "192.0.2.9:80"),
		signed(t, pub.priv, "acme/early", 1, time.Now(), "127.0.0.1:9"),
	} {
		if _, err := pub.dht.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	finder := c.node(nil, t.TempDir())
	f := &fakeDialer{}
	finder.probes.dial = f.dial
	// The finder knows pub's addresses, as a lookup that heard of it
	// would, before a storer's answer brings pub's record.
	finder.Host().Peerstore().AddAddrs(pub.ID(), pub.Host().Addrs(), time.Hour)
	res, err := finder.Find(ctx, "acme/early")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Instances) != 2 || !res.Instances[0].Reachable || !res.Instances[1].Reachable {
		t.Fatalf("instances: %+v", res.Instances)
	}
	for _, ep := range []string{"192.0.2.9:80", "127.0.0.1:9"} {
		if got := f.count(ep); got != 1 {
			t.Fatalf("%d dials of %s, want 1", got, ep)
		}
	}
	if early, after := probesCounted(finder, "early"), probesCounted(finder, "after"); early != 2 || after != 0 {
		t.Fatalf("probes counted early %d, after %d; want 2 and 0", early, after)
	}
}

// TestEarlyProbeLoopbackAfterCheck: a record that lists a loopback
// endpoint has its peer shown to run on this machine during the gather (a
// connection over loopback, made then), and its endpoints dialled after
// that, all before rank, which takes the check and the probes; a record
// of the same peer seen meanwhile is probed too. A peer that cannot be
// shown to run here has no endpoint dialled, and rank says why. A peer
// whose addresses were not known yet when its record came is checked by
// rank (a storer's answer can come before the lookup names them).
func TestEarlyProbeLoopbackAfterCheck(t *testing.T) {
	a, b, late := probeNode(t, Config{}), probeNode(t, Config{}), probeNode(t, Config{})
	f := &fakeDialer{}
	a.probes.dial = f.dial
	a.Host().Peerstore().AddAddrs(b.ID(), b.Host().Addrs(), time.Hour)
	now := time.Now()
	r := signed(t, b.priv, "acme/x", 1, now, "127.0.0.1:80", "192.0.2.1:80")
	other := signed(t, b.priv, "acme/y", 1, now, "127.0.0.1:82")
	far := signed(t, nil, "acme/x", 1, now, "127.0.0.1:81")
	lateRec := signed(t, late.priv, "acme/x", 1, now, "127.0.0.1:83")
	e := a.startEarly(t.Context(), nil)
	defer e.close()
	e.saw(r)
	e.saw(other) // most likely while the check runs: it waits for it
	e.saw(far)
	e.saw(lateRec)
	a.Host().Peerstore().AddAddrs(late.ID(), late.Host().Addrs(), time.Hour)
	waitFor(t, "the early dials of b's endpoints", func() bool {
		return f.count("127.0.0.1:80") == 1 && f.count("192.0.2.1:80") == 1 && f.count("127.0.0.1:82") == 1
	})
	if len(a.Host().Network().ConnsToPeer(b.ID())) == 0 {
		t.Fatal("no connection to b: the check did not dial it")
	}
	e.saw(r) // from another storer: no second dial
	e.stop()
	ins := a.rank(t.Context(), []*record.Record{r, far, lateRec}, e)
	byPeer := map[string]Instance{}
	for _, in := range ins {
		byPeer[in.Peer] = in
	}
	for _, p := range []*Node{b, late} {
		if in := byPeer[p.ID().String()]; !in.Reachable {
			t.Fatalf("instance of %s: %+v", p.ID(), in)
		}
	}
	if in := byPeer[far.Peer.String()]; in.Reachable || !strings.Contains(in.Probe["127.0.0.1:81"], "not shown to run on this machine (no loopback address known") {
		t.Fatalf("far instance: %+v", in)
	}
	if got := f.total(); got != 4 {
		t.Fatalf("%d dials, want 4", got)
	}
	// other's probe is early too, but rank is not asked for its record.
	if early, after := probesCounted(a, "early"), probesCounted(a, "after"); early != 2 || after != 1 {
		t.Fatalf("counted early %d, after %d; want 2 and 1", early, after)
	}
}
