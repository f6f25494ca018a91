package dht

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cellnode/cellnode/dht/record"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLookupConvergedTellsTheResult: the closest peers a lookup tells its
// converged callback, before kad-dht's follow-up round, are the peers the
// lookup then returns, with a dead peer and peers the finder cannot reach
// in the network (those kad-dht queried are unreachable and left out of
// both; those it only heard of are in both).
func TestLookupConvergedTellsTheResult(t *testing.T) {
	clk := &clock{t: time.Now()}
	nodes, mn := testMocknet(t, 24, clk)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := nodes[7].host.Close(); err != nil {
		t.Fatal(err)
	}
	// Peers the finder cannot reach while the others name them: its
	// queries to them fail, and kad-dht leaves them out of its result.
	for _, nd := range nodes[8:16] {
		if err := mn.UnlinkPeers(nodes[0].host.ID(), nd.host.ID()); err != nil {
			t.Fatal(err)
		}
		if err := mn.DisconnectPeers(nodes[0].host.ID(), nd.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	d := nodes[0].dht
	sp := d.spaces[0]
	for i := range 12 {
		key := record.Key(fmt.Sprintf("acme/converge%d", i))
		var told []peer.ID
		calls := 0
		peers, err, _ := d.lookup(ctx, sp, key, func(peer.ID) {}, nil, func(closest []peer.ID) {
			calls++
			told = slices.Clone(closest)
		})
		if err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Fatalf("key %d: converged told %d times, want once", i, calls)
		}
		if len(peers) == 0 {
			t.Fatalf("key %d: no closest peers", i)
		}
		a, b := slices.Clone(peers), slices.Clone(told)
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Fatalf("key %d: converged told %v, the lookup returned %v", i, told, peers)
		}
	}
}
