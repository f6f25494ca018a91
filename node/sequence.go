package node

import (
	"fmt"
	"math"
	"strconv"

	"github.com/cellnode/cellnode/internal/safefile"
)

// Skip moves the sequence past held, a number the network was seen to hold
// for this node's records (for example after the sequence file was emptied
// or restored from an old backup): the next number Next hands out is above
// it. A held number at or below the last one handed out changes nothing.
// The new floor is saved before Skip returns. It is safe for concurrent use.
func (s *Sequencer) Skip(held uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held <= s.last {
		return nil
	}
	s.last = held
	if held == math.MaxUint64 {
		return fmt.Errorf("node: the network holds sequence number %d, the largest: this node's records can no longer replace it", held)
	}
	if s.path != "" {
		if err := safefile.WriteFile(s.path, []byte(strconv.FormatUint(held, 10)+"\n"), 0o600); err != nil {
			return fmt.Errorf("node: save sequence: %w", err)
		}
	}
	return nil
}
