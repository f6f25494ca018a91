package node

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

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
}

// FindResult is the answer to a find.
type FindResult struct {
	Name      string         `json:"name"`
	Instances []Instance     `json:"instances"`
	Offline   bool           `json:"offline,omitempty"`  // the network was not reachable: local cells only
	Rejected  map[string]int `json:"rejected,omitempty"` // records dropped, by reason
	Asked     int            `json:"asked"`              // DHT peers asked
}

// Find returns the live, verified instances of the cell name from the DHT
// and from the cells registered on this machine, pings every endpoint in
// parallel (ProbeTimeout each) and ranks reachable instances by measured
// latency, then unreachable ones. When the DHT has no peer to ask, the
// result is marked Offline and holds local cells only; that is not an error.
func (n *Node) Find(ctx context.Context, name string) (*FindResult, error) {
	if _, err := dht.ParseName(name); err != nil {
		return nil, err
	}
	recs, st, err := n.dht.Find(ctx, name, n.now)
	res := &FindResult{Name: name, Instances: []Instance{}, Rejected: st.Rejected, Asked: st.Responded}
	if errors.Is(err, dht.ErrNoPeers) {
		res.Offline = true
	} else if err != nil {
		return nil, err
	}
	raws := make([][]byte, 0, len(recs))
	for _, r := range recs {
		raws = append(raws, r.Bytes())
	}
	for _, c := range n.localCells() {
		if c.Name == name && len(c.Record) > 0 {
			raws = append(raws, c.Record)
		}
	}
	merged := dht.Merge(name, raws, n.now(), res.Rejected)
	res.Instances = Rank(ctx, merged)
	if len(res.Rejected) == 0 {
		res.Rejected = nil
	}
	return res, nil
}

// Rank pings every endpoint of every record in parallel and returns the
// instances, reachable ones first by latency (ties by peer ID), then the
// unreachable ones by peer ID.
func Rank(ctx context.Context, recs []*dht.Record) []Instance {
	out := make([]Instance, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		out[i] = Instance{Peer: r.Peer.String(), Endpoints: r.Endpoints, Region: r.Region,
			Expires: r.Expires, Seq: r.Seq}
		if r.Manifest.Defined() {
			out[i].Manifest = r.Manifest.String()
		}
		var mu sync.Mutex
		for _, ep := range r.Endpoints {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rtt, err := Probe(ctx, ep, ProbeTimeout)
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				ms := float64(rtt.Microseconds()) / 1000
				if !out[i].Reachable || ms < out[i].LatencyMS {
					out[i].Reachable, out[i].LatencyMS, out[i].Best = true, ms, ep
				}
			}()
		}
	}
	wg.Wait()
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Reachable != b.Reachable {
			return a.Reachable
		}
		if a.Reachable && a.LatencyMS != b.LatencyMS {
			return a.LatencyMS < b.LatencyMS
		}
		return a.Peer < b.Peer
	})
	return out
}
