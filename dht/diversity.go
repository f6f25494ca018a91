package dht

import (
	"net"
	"slices"
	"sort"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Replica diversity. Anyone can grind peer IDs closer to a cell's key than
// any honest node in a few hundred tries, so the Replication closest peers
// of a key may all be one attacker's. Addresses cost more than IDs: the set
// a record is stored at, and the set a find asks once its lookup ends, take
// at most perGroup peers from one IP group (an IPv4 /16 or an IPv6 /32, as
// kad-dht's routing-table diversity filter groups them), closest first, so
// one network's Sybils hold at most perGroup of the places and honest
// peers near the key hold the rest. Three storers agreeing end a find early
// only if no two of them share a group. On a private network (the LAN DHT)
// a group is one machine: an IPv4 address, an IPv6 /64. Peers with only
// loopback or otherwise unroutable addresses (one machine, a test) are
// each a group of their own.
const perGroup = 2

// ipGroups returns the IP groups of p: those of the addresses of its open
// connections (what it actually dials from), or, with none open, those it
// advertises. A peer advertising addresses in many groups counts against
// each of them.
func ipGroups(h host.Host, p peer.ID) []string {
	var addrs []ma.Multiaddr
	for _, c := range h.Network().ConnsToPeer(p) {
		addrs = append(addrs, c.RemoteMultiaddr())
	}
	if len(addrs) == 0 {
		addrs = h.Peerstore().Addrs(p)
	}
	var out []string
	for _, a := range addrs {
		if g := ipGroup(a); g != "" && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// ipGroup returns the group of an IP address: its /16 (IPv6 /32) when it
// is public, the address itself (IPv6 its /64) when it is private, and ""
// (no group) for loopback and unroutable addresses.
func ipGroup(a ma.Multiaddr) string {
	ip, err := manet.ToIP(a)
	if err != nil || ip.IsLoopback() {
		return ""
	}
	public := manet.IsPublicAddr(a)
	if !public && !manet.IsPrivateAddr(a) {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		if !public {
			return v4.String() + "/32"
		}
		return v4.Mask(net.CIDRMask(16, 32)).String() + "/16"
	}
	if !public {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.Mask(net.CIDRMask(32, 128)).String() + "/32"
}

// groupCount counts chosen peers per IP group.
type groupCount struct {
	h   host.Host
	per int
	n   map[string]int
}

func newGroupCount(h host.Host, per int) *groupCount {
	return &groupCount{h: h, per: per, n: map[string]int{}}
}

// take counts p and reports true if every group of p had room for it; it
// counts nothing and reports false otherwise.
func (c *groupCount) take(p peer.ID) bool { return c.takeGroups(ipGroups(c.h, p)) }

// takeGroups is take for a peer in the IP groups gs.
func (c *groupCount) takeGroups(gs []string) bool {
	for _, g := range gs {
		if c.n[g] >= c.per {
			return false
		}
	}
	for _, g := range gs {
		c.n[g]++
	}
	return true
}

// diverse returns up to n peers, closest to key first, with at most
// perGroup from one IP group: from the lookup's closest peers (they
// answered it), then, where the group limit left places, from the other
// peers heard of (which may not answer: some are gone).
func (d *Node) diverse(key kb.ID, n int, closest, heard []peer.ID) []peer.ID {
	gc := newGroupCount(d.host, perGroup)
	seen := map[peer.ID]bool{d.host.ID(): true}
	var out []peer.ID
	for _, l := range [][]peer.ID{closest, heard} {
		l = slices.Clone(l)
		sort.SliceStable(l, func(i, j int) bool {
			return closer(key, kb.ConvertPeerID(l[i]), kb.ConvertPeerID(l[j]))
		})
		for _, p := range l {
			if len(out) == n {
				break
			}
			if !seen[p] && gc.take(p) {
				out = append(out, p)
			}
			seen[p] = true
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		return closer(key, kb.ConvertPeerID(out[i]), kb.ConvertPeerID(out[j]))
	})
	return out
}
