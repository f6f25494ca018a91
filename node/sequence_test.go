package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/cellnode/cellnode/internal/safefile"

	"github.com/cellnode/cellnode/dht"
	"github.com/libp2p/go-libp2p/core/peer"
)

// logged reports whether l holds a record at level whose message or
// attributes contain s.
func (l *logRecorder) logged(level slog.Level, s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Level != level {
			continue
		}
		found := strings.Contains(r.Message, s)
		r.Attrs(func(a slog.Attr) bool {
			found = found || strings.Contains(a.Value.String(), s)
			return !found
		})
		if found {
			return true
		}
	}
	return false
}

// seqNode starts a node on home bootstrapped to c, with its own clock and
// logger, and waits for its bootstrap.
func seqNode(t *testing.T, c *cluster, home string, now func() time.Time, log *logRecorder) *Node {
	t.Helper()
	boot := []peer.AddrInfo{{ID: c.boot.ID(), Addrs: c.boot.Host().Addrs()}}
	n, err := New(Config{Home: home, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: boot, RuntimeDir: c.runtime,
		DHT: dht.Config{Mode: dht.ModeServer}, Now: now, Logger: slog.New(log)})
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

// TestWithdrawOnFullDisk: once the sequence file can no longer be written
// (the disk is full, the file was replaced by a directory, the home became
// read-only) and the numbers reserved for records are used up, publishes
// fail with a clear error at Error level, and the withdrawal still reaches
// the storers, from the numbers kept for withdrawals, with no write.
func TestWithdrawOnFullDisk(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(t *testing.T, n *Node, home string)
		want string // in the logged error
	}{
		{"ENOSPC", func(t *testing.T, n *Node, home string) {
			n.seq.mu.Lock()
			n.seq.write = func(string, []byte, os.FileMode) error {
				return &os.PathError{Op: "write", Path: filepath.Join(home, SeqFile), Err: syscall.ENOSPC}
			}
			n.seq.mu.Unlock()
		}, "no space left on device"},
		{"seq replaced by a directory", func(t *testing.T, n *Node, home string) {
			p := filepath.Join(home, SeqFile)
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "save sequence"},
		{"read-only home", func(t *testing.T, n *Node, home string) {
			if os.Geteuid() == 0 {
				t.Skip("root writes to read-only directories")
			}
			if err := os.Chmod(home, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(home, 0o700) })
		}, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Now()}
			c := newCluster(t, clk.Now)
			storer := c.node(nil, "")
			home := t.TempDir()
			log := &logRecorder{}
			n := seqNode(t, c, home, clk.Now, log)
			a := announce(t, n, "acme/full", service(t).Addr().String())
			first := a.Status().Seq
			tc.fail(t, n, home)

			// Republish every 50 s of the clock until the reserve runs out:
			// past half of it the warning, then a publish that fails while
			// the last record is still live.
			const failed = "no sequence number reserved for a record"
			for i := 0; !strings.Contains(a.Status().LastError, failed); i++ {
				if i > int(reserveAhead/50e6)+2 {
					t.Fatalf("still publishing after %d steps: %+v", i, a.Status())
				}
				before := a.Status().Publishes
				clk.Add(50 * time.Second)
				waitFor(t, "a republish or its failure", func() bool {
					s := a.Status()
					return s.Publishes > before || strings.Contains(s.LastError, failed)
				})
			}
			if !log.logged(slog.LevelWarn, "could not reserve sequence numbers ahead") {
				t.Fatal("the failed reservation is not logged at Warn")
			}
			if !log.logged(slog.LevelError, "no sequence number reserved for a record") || !log.logged(slog.LevelError, tc.want) {
				t.Fatalf("the failure is not logged at Error with %q: %+v", tc.want, log.recs)
			}
			if err := a.Stop(context.Background()); err != nil {
				t.Fatalf("withdrawal: %v", err)
			}
			for _, s := range []*Node{storer, c.boot} {
				if r := remoteRecord(s, "acme/full", n.ID()); r == nil || !r.Withdrawn || r.Seq <= first {
					t.Fatalf("storer holds %+v, want a withdrawal above seq %d", r, first)
				}
			}
			if st := a.Status(); st.WithdrawalStoredAt == 0 || st.Seq <= first {
				t.Fatalf("status after the withdrawal: %+v", st)
			}
		})
	}
}

// TestWithdrawWhenSequenceExhausted: a node whose sequence reaches the
// largest number records allow publishes its last record, then fails to
// publish with "exhausted" at Error level, and its withdrawal still reaches
// the storers, above that last record.
func TestWithdrawWhenSequenceExhausted(t *testing.T) {
	c := newCluster(t, nil)
	storer := c.node(nil, "")
	home := t.TempDir()
	last := uint64(record.MaxSeq - withdrawalReserve) // the last number a record that announces may take
	if err := os.WriteFile(filepath.Join(home, SeqFile), []byte(strconv.FormatUint(last-1, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &logRecorder{}
	n := seqNode(t, c, home, nil, log)
	a, err := n.Announce(Announcement{Name: "acme/last", Endpoint: service(t).Addr().String(),
		CheckInterval: 10 * time.Millisecond, Republish: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publish of the last number", func() bool { s := a.Status(); return s.Seq == last && s.StoredAt > 0 })
	waitFor(t, "a publish refused for exhausted numbers", func() bool {
		return strings.Contains(a.Status().LastError, "sequence numbers exhausted")
	})
	if !log.logged(slog.LevelError, "sequence numbers exhausted") {
		t.Fatal("exhaustion not logged at Error")
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatalf("withdrawal: %v", err)
	}
	if r := remoteRecord(storer, "acme/last", n.ID()); r == nil || !r.Withdrawn || r.Seq <= last || r.Seq > record.MaxSeq {
		t.Fatalf("storer holds %+v, want a withdrawal above %d", r, last)
	}
	b, _ := os.ReadFile(filepath.Join(home, SeqFile))
	if got, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); got != record.MaxSeq {
		t.Fatalf("sequence file holds %q, want the ceiling %d", b, uint64(record.MaxSeq))
	}
}

// TestSequencerRestartNeverReuses: numbers handed out without a write
// (withdrawals from the reserve, records while the reserve lasts, all with
// the disk full) are never handed out again after a restart, even with the
// clock set back.
func TestSequencerRestartNeverReuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), SeqFile)
	clk := &fakeClock{t: time.Now()}
	s, err := NewSequencer(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	used := map[uint64]bool{}
	take := func(s *Sequencer, withdrawal bool) (uint64, error) {
		n, _, err := s.take(withdrawal)
		if err == nil {
			if used[n] {
				t.Fatalf("number %d handed out twice", n)
			}
			used[n] = true
		}
		return n, err
	}
	if _, err := take(s, false); err != nil {
		t.Fatal(err)
	}
	full := errors.New("no space left on device")
	s.write = func(string, []byte, os.FileMode) error { return full }
	var warned int
	for range 10 { // records within the reserve: no write needed
		clk.Add(40 * time.Second)
		n, warn, err := s.take(false)
		if err != nil {
			t.Fatal(err)
		}
		used[n] = true
		if warn != nil {
			warned++
			if !errors.Is(warn, full) || !strings.Contains(warn.Error(), "could not reserve") {
				t.Fatalf("warning: %v", warn)
			}
		}
	}
	if warned != 1 {
		t.Fatalf("%d warnings about the reservation, want 1 (past half the reserve, once)", warned)
	}
	clk.Add(time.Duration(reserveAhead) * time.Microsecond)
	if _, err := take(s, false); err == nil || !errors.Is(err, full) {
		t.Fatalf("a record past the reserve with the disk full: %v", err)
	}
	var maxUsed uint64
	for range withdrawalReserve {
		n, err := take(s, true)
		if err != nil {
			t.Fatalf("withdrawal: %v", err)
		}
		maxUsed = max(maxUsed, n)
	}
	b, _ := os.ReadFile(path)
	if onDisk, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); maxUsed > onDisk {
		t.Fatalf("handed out %d, above the ceiling on disk %d", maxUsed, onDisk)
	}

	for _, back := range []time.Duration{0, -time.Hour} {
		clk.Add(back)
		s2, err := NewSequencer(path, clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		for _, withdrawal := range []bool{false, true} {
			n, err := take(s2, withdrawal)
			if err != nil {
				t.Fatal(err)
			}
			if n <= maxUsed {
				t.Fatalf("after a restart (clock %v): %d, not above %d", back, n, maxUsed)
			}
			maxUsed = n
		}
	}
}

// TestSequencerAtMaxUint64: a sequence file at the largest uint64 (or any
// number past what records allow) leaves nothing sound to hand out: both
// kinds of number fail with a clear error, nothing wraps.
func TestSequencerAtMaxUint64(t *testing.T) {
	for _, v := range []uint64{math.MaxUint64, record.MaxSeq, record.MaxSeq - withdrawalReserve} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), SeqFile)
			if err := os.WriteFile(path, []byte(strconv.FormatUint(v, 10)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := NewSequencer(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := s.Next(); err == nil || !strings.Contains(err.Error(), "exhausted") {
				t.Fatalf("Next: %d, %v", n, err)
			}
			n, err := s.NextWithdrawal()
			if v >= record.MaxSeq {
				if err == nil || !strings.Contains(err.Error(), "exhausted") {
					t.Fatalf("NextWithdrawal: %d, %v", n, err)
				}
				return
			}
			if err != nil || n != v+1 {
				t.Fatalf("NextWithdrawal below the largest number: %d, %v", n, err)
			}
		})
	}
}

// TestSequencerReserve: Reserve writes the ceiling a fresh home's first
// record needs, so that the record itself does not write; a home whose
// ceiling is far enough ahead is not written; and a failed Reserve loses
// nothing: the record's Next writes (and reports) as it would have.
func TestSequencerReserve(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	path := filepath.Join(t.TempDir(), SeqFile)
	s, err := NewSequencer(path, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	s.write = func(p string, b []byte, mode os.FileMode) error { writes++; return safefile.WriteFile(p, b, mode) }
	if err := s.Reserve(); err != nil || writes != 1 {
		t.Fatalf("Reserve on a fresh home: %v, %d writes; want the ceiling written once", err, writes)
	}
	clk.Add(time.Second)
	n, err := s.Next()
	if err != nil || writes != 1 {
		t.Fatalf("the first record after Reserve: %d, %v, %d writes; want no second write", n, err, writes)
	}
	if err := s.Reserve(); err != nil || writes != 1 {
		t.Fatalf("Reserve with the ceiling 10 minutes ahead: %v, %d writes; want none", err, writes)
	}

	full := errors.New("no space left on device")
	s2, err := NewSequencer(filepath.Join(t.TempDir(), SeqFile), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	s2.write = func(string, []byte, os.FileMode) error { return full }
	if err := s2.Reserve(); !errors.Is(err, full) {
		t.Fatalf("Reserve with the disk full: %v", err)
	}
	if _, err := s2.Next(); !errors.Is(err, full) {
		t.Fatalf("Next after a failed Reserve: %v; want the write's error again", err)
	}
}
