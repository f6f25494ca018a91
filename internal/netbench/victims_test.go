package netbench

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cellnode/cellnode/internal/delaynet"
)

// TestVictimsSparing: the kill before the bootstrap-down case leaves one
// sidecar that peers.json names alive, and kills as many as asked.
func TestVictimsSparing(t *testing.T) {
	var sidecars []*proc
	for i := range 10 {
		sidecars = append(sidecars, &proc{nd: &delaynet.Node{Index: i + 2, Addr: netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", i+2))}})
	}
	peersJSON := []byte(`{"version":1,"peers":[
		{"id":"a","addrs":["/ip4/10.77.0.2/udp/1/quic-v1","/ip4/10.77.0.2/tcp/1"]},
		{"id":"b","addrs":["/ip4/10.77.0.7/tcp/1"]},
		{"id":"boot","addrs":["/ip4/10.77.0.1/tcp/1"]}]}`)
	remembered := rememberedAddrs(peersJSON)
	if len(remembered) != 3 {
		t.Fatalf("remembered %v, want 3 addresses", remembered)
	}
	// 2 of 10 spread over the list are sidecars 0 and 5 (10.77.0.2 and
	// 10.77.0.7): both remembered, so one is swapped.
	victims := victimsSparing(sidecars, 2, remembered)
	if len(victims) != 2 {
		t.Fatalf("%d victims, want 2", len(victims))
	}
	alive := 0
	for _, p := range sidecars {
		dead := false
		for _, v := range victims {
			dead = dead || v == p
		}
		if !dead && remembered[p.nd.Addr] {
			alive++
		}
	}
	if alive != 1 {
		t.Fatalf("%d remembered sidecars alive after the kill, want 1", alive)
	}
	// With a remembered sidecar spared anyway, the spread is kept.
	if got := victimsSparing(sidecars, 3, remembered); len(got) != 3 || got[0] != sidecars[0] {
		t.Fatalf("victims %v, want sidecars 0, 3 and 6", got)
	}
	if got := victimsSparing(sidecars, 2, rememberedAddrs([]byte("not json"))); len(got) != 2 {
		t.Fatalf("no peers.json: %d victims, want 2", len(got))
	}
}
