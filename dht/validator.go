package dht

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	p2precord "github.com/libp2p/go-libp2p-record"
)

// Validator is the kad-dht record validator of the "cell" namespace in the
// simulator's nodes (Config.ValueRecords), for its baseline of stock value
// records. It accepts a value record under the key
// "/cell/<org>/<name>/<peer id>" only if it is a live instance record of
// that cell signed by that peer. Select prefers the highest sequence number
// and returns 0 on a tie, so republishing the same record is accepted. Every
// other node runs NoValues, which refuses them all: instances are stored
// by the instances protocol, within the store's quotas.
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

// ErrValueRecord is the refusal of a kad-dht value record under /cell/ by a
// node that does not take them (every node but the simulator's).
var ErrValueRecord = errors.New("dht: kad-dht value records under /cell/ are not accepted; instances are stored by " + string(ProtocolID))

// NoValues is the kad-dht validator of the "cell" namespace that refuses
// every value record (ErrValueRecord).
type NoValues struct{}

var _ p2precord.Validator = NoValues{}

// Validate implements p2precord.Validator.
func (NoValues) Validate(key string, _ []byte) error {
	return fmt.Errorf("%w (key %q)", ErrValueRecord, key)
}

// Select implements p2precord.Validator.
func (NoValues) Select(key string, _ [][]byte) (int, error) {
	return 0, fmt.Errorf("%w (key %q)", ErrValueRecord, key)
}

// valueValidator is the "cell" namespace's validator for cfg.
func valueValidator(cfg Config) p2precord.Validator {
	if cfg.ValueRecords {
		return Validator{Now: cfg.Store.Now}
	}
	return NoValues{}
}
