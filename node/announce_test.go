package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// logRecorder is a slog.Handler that keeps every record's level and message.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count returns how many records at level carry msg in their message.
func (l *logRecorder) count(level slog.Level, msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, msg) {
			n++
		}
	}
	return n
}

// remoteRecord returns the record of peer p for name held by n's store.
func remoteRecord(n *Node, name string, p peer.ID) *record.Record {
	for _, r := range n.DHT().Store().Get(name) {
		if r.Peer == p {
			return r
		}
	}
	return nil
}

// slowPublish makes n's live publishes slow: each stores the record for
// real, then stalls (as a publish waiting on a storer that never answers)
// until its context ends, and sends that context's error to ended, if not
// nil. Withdrawals go through at once.
func slowPublish(n *Node, ended chan<- error) {
	n.publishHook = func(ctx context.Context, r *record.Record) (dht.PublishStats, error) {
		st, err := n.dht.Publish(ctx, r)
		if r.Withdrawn {
			return st, err
		}
		<-ctx.Done()
		if ended != nil {
			ended <- ctx.Err()
		}
		return st, err
	}
}

// TestStopWithdrawsDuringSlowPublish stops announcers while their
// publishes stall, with health checks piling up behind them, 50 times:
// every Stop must return with the withdrawal stored at a remote peer, and
// no remote store may keep a live record.
func TestStopWithdrawsDuringSlowPublish(t *testing.T) {
	c := newCluster(t, nil)
	storer := c.node(nil, "")
	n := c.node(nil, "")
	slowPublish(n, nil)
	remotes := []*Node{c.boot, storer}
	endpoint := service(t).Addr().String()
	var last uint64
	for i := range 50 {
		a, err := n.Announce(Announcement{Name: "acme/slow", Endpoint: endpoint, CheckInterval: 2 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a live record at a remote store", func() bool {
			for _, m := range remotes {
				if r := remoteRecord(m, "acme/slow", n.ID()); r != nil && !r.Withdrawn && r.Seq > last {
					return true
				}
			}
			return false
		})
		if err := a.Stop(context.Background()); err != nil {
			t.Fatalf("stop %d: %v", i, err)
		}
		withdrawn := 0
		for _, m := range remotes {
			r := remoteRecord(m, "acme/slow", n.ID())
			switch {
			case r == nil:
			case !r.Withdrawn:
				t.Fatalf("stop %d: %s still holds a live record (seq %d) after Stop", i, m.ID(), r.Seq)
			default:
				withdrawn++
				last = max(last, r.Seq)
			}
		}
		if withdrawn == 0 {
			t.Fatalf("stop %d: no remote store holds the withdrawal", i)
		}
		if s := a.Status(); s.Announcing || s.WithdrawalStoredAt == 0 {
			t.Fatalf("stop %d: status after Stop: %+v", i, s)
		}
	}
}

// TestFailedCheckCancelsSlowPublish: a service that stops answering while
// a publish stalls is withdrawn at once; the publish is cancelled, not
// waited out.
func TestFailedCheckCancelsSlowPublish(t *testing.T) {
	c := newCluster(t, nil)
	n := c.node(nil, "")
	ended := make(chan error, 16)
	slowPublish(n, ended)
	ln := service(t)
	a, err := n.Announce(Announcement{Name: "acme/slow", Endpoint: ln.Addr().String(), CheckInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	waitFor(t, "a live record at the bootstrap node", func() bool {
		r := remoteRecord(c.boot, "acme/slow", n.ID())
		return r != nil && !r.Withdrawn
	})
	ln.Close()
	waitFor(t, "the withdrawal at the bootstrap node", func() bool {
		r := remoteRecord(c.boot, "acme/slow", n.ID())
		return r != nil && r.Withdrawn && !a.Status().LastWithdrawal.IsZero()
	})
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the stalled publish ended with %v, want it cancelled", err)
	}
	if s := a.Status(); s.Announcing || s.Healthy || s.DownChecks == 0 {
		t.Fatalf("status: %+v", s)
	}
}

// loneNode is a DHT server with no peer at all: its own store takes every
// record, and no remote peer does.
func loneNode(t *testing.T, clk *fakeClock, log *logRecorder) *Node {
	t.Helper()
	cfg := Config{Home: t.TempDir(), Listen: []string{"/ip4/127.0.0.1/tcp/0"}, RuntimeDir: t.TempDir(),
		DHT: dht.Config{Mode: dht.ModeServer}, Logger: slog.New(log)}
	if clk != nil {
		cfg.Now = clk.Now
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestNoRemotePeerWarns: publishes that only this node's own store took
// are failures, warned about at the first one and then once every
// warnEveryRepublishes republish intervals, not at every publish.
func TestNoRemotePeerWarns(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	log := &logRecorder{}
	n := loneNode(t, clk, log)
	const republish = time.Second // by the fake clock
	a, err := n.Announce(Announcement{Name: "acme/alone", Endpoint: service(t).Addr().String(),
		CheckInterval: 2 * time.Millisecond, Republish: republish})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	const msg = "records reach no remote peer"
	waitFor(t, "the first publish", func() bool { return a.Status().Publishes == 1 })
	if s := a.Status(); s.Failures != 1 || s.StoredAt != 0 || s.LastError == "" || !s.LastSuccess.IsZero() {
		t.Fatalf("status after a publish no remote peer took: %+v", s)
	}
	if got := log.count(slog.LevelWarn, msg); got != 1 {
		t.Fatalf("%d warnings after the first failed publish, want 1", got)
	}
	const publishes = 2*warnEveryRepublishes + 1
	for k := 2; k <= publishes; k++ {
		clk.Add(republish)
		waitFor(t, fmt.Sprintf("publish %d", k), func() bool { return a.Status().Publishes == k })
	}
	// Warned at the publishes of time 0, 5 and 10 republish intervals.
	if got := log.count(slog.LevelWarn, msg); got != 3 {
		t.Fatalf("%d warnings over %d failed publishes, want 3", got, publishes)
	}
	if s := a.Status(); s.Failures != publishes {
		t.Fatalf("failures %d, want %d", s.Failures, publishes)
	}
}

// TestServiceDownFromStartWarns: a service that never answers is reported
// at the first check, then once every warnEveryChecks checks.
func TestServiceDownFromStartWarns(t *testing.T) {
	log := &logRecorder{}
	n := loneNode(t, nil, log)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close() // nothing listens there
	a, err := n.Announce(Announcement{Name: "acme/down", Endpoint: ln.Addr().String(), CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	waitFor(t, "the first check", func() bool { return a.Status().DownChecks > 0 })
	if got := log.count(slog.LevelWarn, "not announcing until it does"); got != 1 {
		t.Fatalf("%d warnings about a service down from the start, want 1", got)
	}
	waitFor(t, "more checks", func() bool { return a.Status().DownChecks > 2*warnEveryChecks })
	before := a.Status().DownChecks
	warns := log.count(slog.LevelWarn, "service ")
	after := a.Status().DownChecks
	lo, hi := 1+(before-1)/warnEveryChecks, 1+(after-1)/warnEveryChecks
	if warns < lo || warns > hi || warns < 3 {
		t.Fatalf("%d warnings over %d-%d failed checks, want %d-%d", warns, before, after, lo, hi)
	}
	if s := a.Status(); s.Publishes != 0 || s.Announcing || s.DownSince.IsZero() {
		t.Fatalf("status: %+v", s)
	}
}

// TestStaleSequenceRecovers: a node whose sequence file went back (here:
// emptied after a run whose numbers were ahead of the clock) publishes
// records that every storer refuses as stale. It must say so at Warn, move
// its sequence past the network's and become findable at its new endpoint.
func TestStaleSequenceRecovers(t *testing.T) {
	c := newCluster(t, nil)
	storer := c.node(nil, "")
	home := t.TempDir()
	boot := []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}
	ahead := uint64(time.Now().Add(time.Hour).UnixMicro())
	if err := os.WriteFile(filepath.Join(home, SeqFile), []byte(strconv.FormatUint(ahead, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(log *logRecorder) *Node {
		n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot, RuntimeDir: c.runtime,
			DHT: dht.Config{Mode: dht.ModeServer}, Logger: slog.New(log)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Bootstrap(ctx); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := start(&logRecorder{})
	a := announce(t, first, "acme/stale", service(t).Addr().String())
	held := a.Status().Seq
	if held <= ahead {
		t.Fatalf("first run published seq %d, want above %d", held, ahead)
	}
	freeze(first, a) // a crash: the record stays live at the storers
	first.Close()
	if err := os.WriteFile(filepath.Join(home, SeqFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	log := &logRecorder{}
	second := start(log)
	newEndpoint := service(t).Addr().String()
	b, err := second.Announce(Announcement{Name: "acme/stale", Endpoint: newEndpoint, CheckInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a publish past the network's sequence number", func() bool {
		s := b.Status()
		return s.Seq > held && s.StoredAt > 0 && s.LastError == ""
	})
	if s := b.Status(); s.StaleRefusals == 0 {
		t.Fatalf("no stale refusal counted: %+v", s)
	}
	if got := log.count(slog.LevelWarn, "stale"); got == 0 {
		t.Fatal("stale refusals not logged at Warn")
	}
	if r := remoteRecord(storer, "acme/stale", second.ID()); r == nil || r.Seq <= held || r.Endpoints[0] != newEndpoint {
		t.Fatalf("storer holds %+v, want the new record above seq %d", r, held)
	}
	finder := c.node(nil, t.TempDir())
	got := findPeers(t, finder, "acme/stale")
	if in, ok := got[second.ID().String()]; !ok || in.Seq <= held || in.Endpoints[0] != newEndpoint {
		t.Fatalf("find after recovery: %+v", got)
	}
}

// TestLeaveWithdrawsInParallel: Leave withdraws every cell at once, each
// with its budget: each withdrawal here waits until all of them have
// started, which would run out a budget if they ran one after another.
func TestLeaveWithdrawsInParallel(t *testing.T) {
	c := newCluster(t, nil)
	n := c.node(nil, "")
	const cells = 4
	var started atomic.Int32
	all := make(chan struct{})
	n.publishHook = func(ctx context.Context, r *record.Record) (dht.PublishStats, error) {
		if r.Withdrawn {
			if started.Add(1) == cells {
				close(all)
			}
			select {
			case <-all:
			case <-ctx.Done():
				return dht.PublishStats{}, ctx.Err()
			}
		}
		return n.dht.Publish(ctx, r)
	}
	for i := range cells {
		announce(t, n, fmt.Sprintf("acme/cell-%d", i), service(t).Addr().String())
	}
	if err := n.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range cells {
		name := fmt.Sprintf("acme/cell-%d", i)
		if r := remoteRecord(c.boot, name, n.ID()); r == nil || !r.Withdrawn {
			t.Fatalf("%s at the bootstrap node after Leave: %+v", name, r)
		}
	}
	if st := n.Status(); len(st.Cells) != 0 {
		t.Fatalf("cells left after Leave: %+v", st.Cells)
	}
}

// TestCloseLeavesNoGoroutine: Close stops every goroutine of a node with
// several announcers, and Announce during or after Close is refused and
// starts nothing.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	c := newCluster(t, nil)
	settle := func() int {
		// Let the cluster's own goroutines settle: the fewest seen over a
		// few polls in a row with no change.
		prev, same := runtime.NumGoroutine(), 0
		waitFor(t, "a steady goroutine count", func() bool {
			g := runtime.NumGoroutine()
			if g == prev {
				same++
			} else {
				prev, same = g, 0
			}
			return same >= 5
		})
		return prev
	}
	var endpoints []string
	for range 4 {
		endpoints = append(endpoints, service(t).Addr().String())
	}
	before := settle()
	n := c.node(nil, "")
	inWithdrawal := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	n.publishHook = func(ctx context.Context, r *record.Record) (dht.PublishStats, error) {
		if r.Withdrawn {
			once.Do(func() { close(inWithdrawal) })
			<-release
		}
		return n.dht.Publish(ctx, r)
	}
	for i, ep := range endpoints {
		announce(t, n, fmt.Sprintf("acme/cell-%d", i), ep)
	}
	closed := make(chan error)
	go func() { closed <- n.Close() }()
	<-inWithdrawal // Close has begun
	if _, err := n.Announce(Announcement{Name: "acme/late", Endpoint: "127.0.0.1:1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Announce during Close: %v", err)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := n.Announce(Announcement{Name: "acme/late", Endpoint: "127.0.0.1:1"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Announce after Close: %v", err)
	}
	waitFor(t, fmt.Sprintf("the goroutine count back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
}

func TestSequencerSkip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	clk := &fakeClock{t: time.Now()}
	s, _ := NewSequencer(path, clk.Now)
	a, _ := s.Next()
	if err := s.Skip(a - 10); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.Next(); b != a+1 && b <= a {
		t.Fatalf("Skip below the last number moved the sequence back: %d then %d", a, b)
	}
	held := a + 1_000_000_000
	if err := s.Skip(held); err != nil {
		t.Fatal(err)
	}
	s2, err := NewSequencer(path, clk.Now) // the floor is on disk
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := s2.Next(); b <= held {
		t.Fatalf("after Skip(%d) and a restart: %d", held, b)
	}
}

func TestStaleRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		held uint64
		ok   bool
	}{
		{"refusal", fmt.Errorf("dht: publish: %w", &dht.RemoteError{Msg: fmt.Errorf("%w: seq 5, holding 9", record.ErrStale).Error()}), 9, true},
		{"no number", &dht.RemoteError{Msg: record.ErrStale.Error()}, 0, true},
		{"other refusal", &dht.RemoteError{Msg: "rate limited"}, 0, false},
		{"local", fmt.Errorf("%w: seq 5, holding 9", record.ErrStale), 0, false},
		{"nil", nil, 0, false},
	} {
		held, ok := staleRefusal(tc.err)
		if held != tc.held || ok != tc.ok {
			t.Errorf("%s: staleRefusal = %d, %v; want %d, %v", tc.name, held, ok, tc.held, tc.ok)
		}
	}
}

// TestAnnounceRegion: a region that records may not carry (not printable
// ASCII, or too long) is refused by Announce with the record rule's
// reason, before anything is signed; a valid one is published.
func TestAnnounceRegion(t *testing.T) {
	n := loneNode(t, nil, &logRecorder{})
	ep := service(t).Addr().String()
	for _, tc := range []struct{ region, want string }{
		{"zürich", "printable ASCII only"},
		{"eu\nwest", "printable ASCII only"},
		{strings.Repeat("r", record.MaxRegionLen+1), "limit"},
	} {
		_, err := n.Announce(Announcement{Name: "acme/region", Endpoint: ep, Region: tc.region})
		if err == nil || !errors.Is(err, record.ErrMalformed) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "region") {
			t.Errorf("region %q: %v, want an error with %q", tc.region, err, tc.want)
		}
	}
	if st := n.Status(); len(st.Cells) != 0 {
		t.Fatalf("a refused announcement left cells: %+v", st.Cells)
	}
	b, err := n.Announce(Announcement{Name: "acme/region", Endpoint: ep, Region: "eu-west-1 (Zurich)", CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop(context.Background())
	// A lone node: the record is signed and stored here only.
	waitFor(t, "a signed record with the region", func() bool {
		r := remoteRecord(n, "acme/region", n.ID())
		return r != nil && r.Region == "eu-west-1 (Zurich)"
	})
}
