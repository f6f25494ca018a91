package node

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/internal/safefile"
)

// Sequence reservation. The sequence file holds a ceiling: every number
// the node has handed out, in this run or an earlier one, is at or below
// it, so a restarted node starts above it and never reuses a number for a
// different record. The ceiling is raised ahead of need (reserveAhead, in
// the microseconds the numbers count), so that most numbers cost no write,
// and the last withdrawalReserve numbers below it are handed out to
// withdrawals only: a withdrawal never writes, and still gets a number when
// the disk is full, the file cannot be replaced, or publishes have used up
// the numbers records allow (record.MaxSeq).
const (
	// reserveAhead is how far past the number handed out the ceiling is
	// raised: 10 minutes of microseconds. It is raised again once less
	// than half of it is left, so a node writes its sequence file about
	// once per 5 minutes, and a restarted node starts at most this far
	// ahead of its clock.
	reserveAhead = uint64(10 * time.Minute / time.Microsecond)
	// withdrawalReserve numbers below the ceiling are kept for
	// withdrawals: a withdrawal takes at most two (one more after a stale
	// refusal), and one is published only while a record may be live.
	withdrawalReserve = 1024
)

// Sequencer hands out record sequence numbers that never go back, also
// across restarts: the current time in microseconds, or one more than the
// last number handed out if the clock is behind it (withdrawals always
// take the last + 1). Numbers are reserved ahead in a file (see
// reserveAhead); a withdrawal never waits for a write. It is safe for
// concurrent use.
type Sequencer struct {
	mu     sync.Mutex
	path   string // "" keeps nothing on disk
	last   uint64 // the highest number handed out or known to be used
	saved  uint64 // the ceiling on disk: every number handed out is at or below it
	now    func() time.Time
	warned bool // a failed reservation was reported since the last one that worked
	// write saves the file (a test seam); nil means safefile.WriteFile.
	write func(path string, b []byte, mode os.FileMode) error
}

// NewSequencer loads the sequence ceiling from path ("" for none: numbers
// then live in memory only).
func NewSequencer(path string, now func() time.Time) (*Sequencer, error) {
	s := &Sequencer{path: path, now: now}
	if s.now == nil {
		s.now = time.Now
	}
	if path == "" {
		s.saved = record.MaxSeq
		return s, nil
	}
	b, err := safefile.ReadFile(path, maxSeqFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node: read sequence: %w", err)
	}
	if len(b) > 0 {
		if s.last, err = strconv.ParseUint(string(trimSpace(b)), 10, 64); err != nil {
			return nil, fmt.Errorf("node: sequence file %s is corrupt: %w", path, err)
		}
	}
	s.saved = s.last
	return s, nil
}

// Next returns the sequence number of the next record that announces, at
// least withdrawalReserve below the reserved ceiling. It fails when the
// numbers records allow are used up, or when the ceiling must be raised
// and the file cannot be written; a withdrawal (NextWithdrawal) still gets
// a number then.
func (s *Sequencer) Next() (uint64, error) {
	n, _, err := s.take(false)
	return n, err
}

// NextWithdrawal returns the sequence number of a withdrawal: the last
// number handed out plus one, from the reserve kept for withdrawals, with
// no write. It writes (and may fail) only when nothing was reserved yet
// (no record was published since the node started, or Skip moved past the
// reserve), and fails when the last number records allow was handed out.
func (s *Sequencer) NextWithdrawal() (uint64, error) {
	n, _, err := s.take(true)
	return n, err
}

// take hands out a number for a withdrawal or for a record that announces.
// warn, when not nil, says that raising the ceiling failed while numbers
// were still reserved: n is good, but publishes stop when they run out. It
// is reported once until a reservation works again.
func (s *Sequencer) take(withdrawal bool) (n uint64, warn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if withdrawal {
		if s.last >= record.MaxSeq {
			return 0, nil, fmt.Errorf("node: sequence numbers exhausted: %d handed out, records allow at most %d; not even a withdrawal can be signed (%s)", s.last, uint64(record.MaxSeq), s.path)
		}
		n = s.last + 1
		if n > s.saved {
			if err := s.save(min(record.MaxSeq, n+reserveAhead)); err != nil {
				return 0, nil, fmt.Errorf("node: no sequence number reserved for the withdrawal: save sequence: %w", err)
			}
		}
		s.last = n
		return n, nil, nil
	}
	if s.last >= record.MaxSeq-withdrawalReserve {
		return 0, nil, fmt.Errorf("node: sequence numbers exhausted: %d handed out, records allow at most %d and the last %d are kept for withdrawals; remove %s only if the clock is right and no record of this node is live (65 s after the last)",
			s.last, uint64(record.MaxSeq), withdrawalReserve, s.path)
	}
	n = uint64(s.now().UnixMicro())
	if n <= s.last {
		n = s.last + 1
	}
	if n > record.MaxSeq-withdrawalReserve {
		return 0, nil, fmt.Errorf("node: sequence numbers exhausted: the clock says %d, records allow at most %d and the last %d are kept for withdrawals", n, uint64(record.MaxSeq), withdrawalReserve)
	}
	if s.saved < n || s.saved-n < reserveAhead/2 {
		if serr := s.save(min(record.MaxSeq, n+reserveAhead)); serr != nil {
			if s.saved < n+withdrawalReserve {
				return 0, nil, fmt.Errorf("node: no sequence number reserved for a record: save sequence: %w (withdrawals can still use the %d kept for them)", serr, withdrawalReserve)
			}
			if !s.warned {
				s.warned = true
				left := time.Duration(min(s.saved-withdrawalReserve-n, uint64(1<<62)/1000)) * time.Microsecond
				warn = fmt.Errorf("node: could not reserve sequence numbers ahead: save sequence: %w; records can be published for about %s more, withdrawals after that", serr, left.Round(time.Second))
			}
		}
	}
	s.last = n
	return n, warn, nil
}

// Reserve raises the ceiling now if the next record's number would need a
// write (a fresh home, or a ceiling written more than reserveAhead/2
// ago), so that the first publish of a node that is starting does not
// wait for that write: the file is synced, tens of milliseconds on some
// disks, on the way from a node's start to its instance being findable.
// It hands out no number. An error is the write's; Next then tries again
// and reports it as it would have.
func (s *Sequencer) Reserve() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := max(uint64(s.now().UnixMicro()), s.last+1)
	if n > record.MaxSeq-withdrawalReserve || (s.saved >= n && s.saved-n >= reserveAhead/2) {
		return nil
	}
	return s.save(min(record.MaxSeq, n+reserveAhead))
}

// save writes ceiling to the file and makes it the reserved ceiling;
// called with s.mu held.
func (s *Sequencer) save(ceiling uint64) error {
	if s.path == "" {
		s.saved = max(s.saved, ceiling)
		return nil
	}
	write := s.write
	if write == nil {
		write = safefile.WriteFile
	}
	if err := write(s.path, []byte(strconv.FormatUint(ceiling, 10)+"\n"), 0o600); err != nil {
		return err
	}
	s.saved, s.warned = ceiling, false
	return nil
}

// Skip moves the sequence past held, a number the network was seen to hold
// for this node's records (for example after the sequence file was emptied
// or restored from an old backup): the next number handed out is above
// it. A held number at or below the last one handed out changes nothing.
// A held number above the reserved ceiling raises it on disk before Skip
// returns. It is safe for concurrent use.
func (s *Sequencer) Skip(held uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held <= s.last {
		return nil
	}
	s.last = held
	if held >= record.MaxSeq {
		return fmt.Errorf("node: the network holds sequence number %d, the largest records allow: this node's records can no longer replace it", held)
	}
	if held > s.saved {
		if err := s.save(min(record.MaxSeq, held+reserveAhead)); err != nil {
			return fmt.Errorf("node: save sequence: %w", err)
		}
	}
	return nil
}
