package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/dht"
)

// Instance is one live instance of a cell as a finder sees it.
type Instance struct {
	Peer      string    `json:"peer"`
	Endpoints []string  `json:"endpoints"`
	Region    string    `json:"region"`
	Manifest  string    `json:"manifest"` // commit CID, or ""
	LatencyMS float64   `json:"latency_ms"`
	Reachable bool      `json:"reachable"`
	Best      string    `json:"best_endpoint,omitempty"` // the endpoint that answered first
	Expires   time.Time `json:"expires"`
	Seq       uint64    `json:"seq"`
	Publisher string    `json:"publisher"` // base64 key that delegated the record; "" for an open record
	Trusted   bool      `json:"trusted"`   // delegated by a publisher the finder trusts
	// Probe says, for each endpoint that did not answer, why: the dial's
	// error, "no answer within 500ms", or why it was not probed ("skipped:
	// unreachable 12s ago (…)", a unix socket or loopback endpoint in a
	// record from the network, over the probes of one find or of the node).
	Probe map[string]string `json:"probe,omitempty"`

	record []byte // the signed record the instance was made from (FindSigned)
}

// FindResult is the answer to a find.
type FindResult struct {
	Name      string     `json:"name"`
	Instances []Instance `json:"instances"`
	Pinned    bool       `json:"pinned"`              // the finder trusted some publishers
	Untrusted int        `json:"untrusted,omitempty"` // live instances not tied to a trusted publisher
	Offline   bool       `json:"offline,omitempty"`   // the network was not reachable: local cells only
	// OfflineReason says why, when Offline: the peers dialled and how each
	// failed, as the node's last bootstrap found.
	OfflineReason string         `json:"offline_reason,omitempty"`
	Rejected      map[string]int `json:"rejected,omitempty"` // records dropped, by reason
	Asked         int            `json:"asked"`              // DHT peers asked
	// Shards is how many shards of the cell's sets the find asked (1 for
	// a cell that is not sharded; docs/records.md, "Shards"), and
	// ShardsUnanswered the shards of which no storer answered: their
	// instances may be missing from Instances.
	Shards           int   `json:"shards,omitempty"`
	ShardsUnanswered []int `json:"shards_unanswered,omitempty"`
}

// FindOptions says whom a find trusts.
type FindOptions struct {
	// Publishers are the trusted publisher keys (from a pinned manifest or
	// the command line). Empty means nothing is pinned: every valid
	// instance is returned, none of them trusted.
	Publishers []ed25519.PublicKey
	// All also returns, marked untrusted, the instances that no trusted
	// publisher delegated. It only matters when Publishers is set.
	All bool
}

// Find is FindWith with nothing pinned.
func (n *Node) Find(ctx context.Context, name string) (*FindResult, error) {
	return n.FindWith(ctx, name, FindOptions{})
}

// FindWith returns the live, verified instances of the cell name from the
// DHT and from the cells registered on this machine, probes their
// endpoints in parallel (one connection each, within ProbeTimeout) and
// ranks reachable instances by measured latency, then unreachable ones.
// The probes of records from the network that need no check first start
// while the gather runs, as each record comes in (see earlyProbes); the
// rest start once the records are merged.
//
// With trusted publishers it asks for those publishers' sets (which a flood
// under the name cannot crowd out) and, in parallel, for the name's set, to
// count the rest: instances no trusted publisher delegated are counted in
// Untrusted and returned, marked, only with All. When the DHT has no peer
// to ask, the result is marked Offline and holds local cells only; that is
// not an error.
//
// Endpoints come from the network, so probes follow these rules; an
// endpoint a rule leaves out is reported in Instance.Probe, and its
// instance is unreachable unless another endpoint answers:
//
//   - unix: endpoints are dialled only for a local peer: this node, or a
//     node whose cell is registered in the runtime directory (written by
//     this user's processes on this machine).
//   - Loopback endpoints (127.0.0.0/8, ::1, 0.0.0.0, ::, an empty host,
//     "localhost") are dialled only for a local peer, for a peer that this
//     node is connected to directly over loopback (not relayed; a loopback
//     connection cannot come from another machine, and its handshake
//     proves the peer's key), or, when the peer is not connected, after a
//     libp2p dial to its loopback addresses made such a connection; or for
//     any peer with Config.SameMachine. Names are resolved at the dial,
//     which refuses loopback addresses for records that no rule above
//     covers.
//   - Each endpoint is dialled once per find, however many records list
//     it; at most MaxProbesPerFind dials per find (one endpoint of every
//     record in turn, trusted records first), at most MaxProbesInFlight
//     at once on the node.
//   - An endpoint of a record that did not answer is not dialled again for
//     UnreachableFor (30 s, by the node's clock), until the instance
//     publishes a newer record: a crashed instance costs a probe timeout
//     once per 30 s, not in every find.
func (n *Node) FindWith(ctx context.Context, name string, opts FindOptions) (*FindResult, error) {
	if _, err := record.ParseName(name); err != nil {
		return nil, err
	}
	res := &FindResult{Name: name, Instances: []Instance{}, Pinned: len(opts.Publishers) > 0, Rejected: map[string]int{}}
	type answer struct {
		raws [][]byte
		st   dht.FindStats
		err  error
	}
	lookups := [][]ed25519.PublicKey{nil}
	if res.Pinned {
		lookups = append(lookups, opts.Publishers)
	}
	answers := make([]answer, len(lookups))
	early := n.startEarly(ctx, opts.Publishers)
	defer early.close()
	var wg sync.WaitGroup
	for i, pubs := range lookups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := &answers[i]
			a.raws, a.st, a.err = n.collect(ctx, name, pubs, early.saw)
		}()
	}
	wg.Wait()
	early.stop()
	var raws [][]byte
	for _, a := range answers {
		switch {
		case errors.Is(a.err, dht.ErrNoPeers):
			res.Offline = true
			res.OfflineReason = n.offlineReason(a.err)
		case a.err != nil:
			return nil, a.err
		}
		res.Asked += a.st.Responded
		res.Shards = max(res.Shards, a.st.Shards)
		for _, sh := range a.st.Unanswered {
			if !slices.Contains(res.ShardsUnanswered, sh) {
				res.ShardsUnanswered = append(res.ShardsUnanswered, sh)
			}
		}
		for k, v := range a.st.Rejected {
			res.Rejected[k] += v
		}
		raws = append(raws, a.raws...)
	}
	for _, c := range n.localCells() {
		if c.Name == name && len(c.Record) > 0 {
			raws = append(raws, c.Record)
		}
	}
	// What this node saw in recent finds goes in too, so that a find that
	// stops on answers holding an older record never shows an instance
	// going back in sequence; it expires like any other record.
	raws = append(raws, n.recent.get(name)...)
	// One merge over every set: a withdrawal seen in one hides an older
	// record seen in another.
	var keep []*record.Record
	trusted := map[string]bool{}  // by peer ID
	signed := map[string][]byte{} // by peer ID: the record each instance comes from
	newest := n.verified.newest(name, raws, n.now(), res.Rejected)
	n.recent.put(name, newest) // withdrawals too: see recentRecords
	merged := dht.Live(newest)
	for _, r := range merged {
		if delegatedBy(r, opts.Publishers) {
			trusted[r.Peer.String()] = true
		} else if res.Pinned {
			res.Untrusted++
			if !opts.All {
				continue
			}
		}
		keep = append(keep, r)
		signed[r.Peer.String()] = r.Bytes()
	}
	trustedFirst(keep, opts.Publishers)
	res.Instances = n.rank(ctx, keep, early)
	for i := range res.Instances {
		res.Instances[i].Trusted = trusted[res.Instances[i].Peer]
		res.Instances[i].record = signed[res.Instances[i].Peer]
	}
	if len(res.Rejected) == 0 {
		res.Rejected = nil
	}
	return res, nil
}

// verifiedRecords remembers the records this node's finds verified, by
// their raw bytes, so that the merge of a find (verifiedRecords.newest,
// dht.Newest's rules) checks the signature of each byte string once: a
// find meets mostly the bytes the last one met (the set's records, the
// node's recentRecords, its own records), and the local API's background
// refresh runs a find every findFresh for a name being polled. A
// signature that held once holds again; the clock (record.Record.Check)
// is checked at every find. The table keeps at most verifiedMax records
// and starts again when full. Safe for concurrent use.
type verifiedRecords struct {
	mu       sync.Mutex
	m        map[string]*record.Record
	verifies int // signatures checked (record.Verify calls), for tests
}

const verifiedMax = 4096

// newest returns the newest valid record of each peer among raws (a
// record of name, live at now; withdrawals kept), ordered by peer ID, as
// dht.Newest does; records refused are counted in rejected by
// record.Reason.
func (v *verifiedRecords) newest(name string, raws [][]byte, now time.Time, rejected map[string]int) []*record.Record {
	return dht.NewestWith(name, raws, now, rejected, func(raw []byte) (*record.Record, error) {
		return v.verify(raw, name, now)
	})
}

// add takes the records a gather verified (dht.Node.CollectSeen), by their
// raw bytes, as verified.
func (v *verifiedRecords) add(verified map[string]*record.Record) {
	if len(verified) == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m)+len(verified) > verifiedMax {
		v.m = map[string]*record.Record{}
	}
	for raw, r := range verified {
		if len(v.m) >= verifiedMax {
			return
		}
		v.m[raw] = r
	}
}

// verify is record.Verify(raw, name, now), the signature checked only for
// bytes not verified before.
func (v *verifiedRecords) verify(raw []byte, name string, now time.Time) (*record.Record, error) {
	v.mu.Lock()
	r := v.m[string(raw)]
	v.mu.Unlock()
	if r != nil && r.Name == name {
		return r, r.Check(now)
	}
	r, err := record.Verify(raw, name, now)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.verifies++
	if err == nil {
		if v.m == nil || len(v.m) >= verifiedMax {
			v.m = map[string]*record.Record{}
		}
		v.m[string(raw)] = r
	}
	return r, err
}

// recentRecords remembers, per cell name, the newest record of each
// instance (withdrawals included, so that a later find that misses a
// withdrawal does not bring the instance back) the node's last
// find returned, for finds to come. Entries go with their records' expiry
// (Merge verifies them again), and the table keeps at most 1024 names.
type recentRecords struct {
	mu sync.Mutex
	m  map[string][][]byte
}

func (r *recentRecords) get(name string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[name]
}

func (r *recentRecords) put(name string, recs []*record.Record) {
	raws := make([][]byte, len(recs))
	for i, rec := range recs {
		raws[i] = rec.Bytes()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= 1024 {
		r.m = map[string][][]byte{}
	}
	r.m[name] = raws
}
