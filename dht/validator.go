package dht

import (
	"fmt"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	p2precord "github.com/libp2p/go-libp2p-record"
)

// Validator is the kad-dht record validator of the "cell" namespace. It
// accepts a value record under the key "/cell/<org>/<name>/<peer id>" only if
// it is a live instance record of that cell signed by that peer. Every DHT
// server of the network runs it, so the kad-dht value store can never hold
// anything else under /cell/. Select prefers the highest sequence number and
// returns 0 on a tie, so republishing the same record is accepted.
type Validator struct {
	// Now is the validator's clock; nil means time.Now.
	Now func() time.Time
}

var _ p2precord.Validator = Validator{}

// ValueKey is the kad-dht value key of one instance: the cell name's key
// followed by the peer ID.
func ValueKey(r *record.Record) string { return record.Key(r.Name) + "/" + r.Peer.String() }

// Validate implements p2precord.Validator.
func (v Validator) Validate(key string, value []byte) error {
	rest, ok := strings.CutPrefix(key, record.KeyPrefix)
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return fmt.Errorf("%w: key %q is not /cell/<org>/<name>/<peer>", record.ErrWrongName, key)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	r, err := record.Verify(value, rest[:i], now())
	if err != nil {
		return err
	}
	if r.Peer.String() != rest[i+1:] {
		return fmt.Errorf("%w: key names peer %s, record is from %s", record.ErrPeerMismatch, rest[i+1:], r.Peer)
	}
	return nil
}

// Select implements p2precord.Validator.
func (v Validator) Select(key string, values [][]byte) (int, error) {
	best, bestSeq := -1, uint64(0)
	for i, b := range values {
		r, err := record.Decode(b)
		if err != nil {
			continue
		}
		if best < 0 || r.Seq > bestSeq {
			best, bestSeq = i, r.Seq
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("dht: select %s: no valid record", key)
	}
	return best, nil
}
