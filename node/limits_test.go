package node

import (
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// TestPrivateNetworkConnLimits: the resource manager takes many
// connections at once from one private address (containers behind a
// host's NAT, a burst of one-shot finds from one machine), where libp2p's
// defaults refuse the ninth; a public address keeps libp2p's limit.
func TestPrivateNetworkConnLimits(t *testing.T) {
	open := func(addr string, n int) int {
		t.Helper()
		rm, err := newResourceManager(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rm.Close()
		ok := 0
		for i := range n {
			a := ma.StringCast(fmt.Sprintf("/ip4/%s/tcp/%d", addr, 4000+i))
			if _, err := rm.OpenConnection(network.DirInbound, true, a); err == nil {
				ok++
			}
		}
		return ok
	}
	for _, addr := range []string{"10.1.2.3", "192.168.7.9", "172.20.0.5", "100.101.102.103", "127.0.0.1"} {
		if got := open(addr, 40); got != 40 {
			t.Errorf("%s: %d of 40 connections at once taken, want all", addr, got)
		}
	}
	if got := open("203.0.113.9", 40); got >= 40 || got == 0 {
		t.Errorf("public address: %d of 40 connections at once taken, want libp2p's per-address limit", got)
	}
}
