// Package bootstrap decides which peers a cell node contacts first to join the
// network, and contacts them.
//
// The default bootstrap peer is DefaultAddr (/dnsaddr/cell.network), whose DNS
// TXT records list the multiaddrs of the well-known nodes. Operators replace
// it with a flag or with the CELLNODE_BOOTSTRAP environment variable (Select),
// or choose "none" to stay offline. The chosen list is resolved to peers
// (List.Resolve) and dialled in parallel (Connect); if none of those answers,
// the peers this node saw on earlier runs (Store) are tried instead, so a node
// can rejoin the network when the default bootstrap node is down.
//
// The package holds no global state: every function is safe for concurrent
// use, and a Store serialises its own file access.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	madns "github.com/multiformats/go-multiaddr-dns"
)

// DefaultAddr is the bootstrap address used when neither flag nor environment
// names one.
const DefaultAddr = "/dnsaddr/cell.network"

// EnvVar is the environment variable that overrides DefaultAddr: a
// comma-separated list of multiaddrs, or "none".
const EnvVar = "CELLNODE_BOOTSTRAP"

// None is the flag or environment value that selects an empty bootstrap list:
// the node stays offline by choice.
const None = "none"

// Sources of a List, in order of precedence.
const (
	SourceFlag    = "flag"
	SourceEnv     = "env"
	SourceDefault = "default"
	SourceNone    = "none"
)

var (
	// ErrNoPeers is returned (wrapped) when no bootstrap peer could be
	// resolved or connected.
	ErrNoPeers = errors.New("bootstrap: no peer reachable")
	// ErrInvalidAddr is returned (wrapped) for an address that is not a
	// valid multiaddr, or not one a peer can be reached at.
	ErrInvalidAddr = errors.New("bootstrap: invalid address")
)

// maxDNSLookups bounds the dnsaddr TXT lookups of one Resolve call, including
// nested ones (a dnsaddr record pointing at another /dnsaddr), so a hostile or
// looping DNS zone cannot make resolution run away.
const maxDNSLookups = 32

// List is the configured bootstrap multiaddrs and where they came from.
// Source is one of SourceFlag, SourceEnv, SourceDefault or SourceNone; Addrs
// is empty exactly when Source is SourceNone.
type List struct {
	Addrs  []ma.Multiaddr
	Source string
}

// Default returns the list that holds only DefaultAddr.
func Default() List {
	return List{Addrs: []ma.Multiaddr{ma.StringCast(DefaultAddr)}, Source: SourceDefault}
}

// Select returns the bootstrap list in effect. Non-empty flags replace env; a
// non-empty env replaces Default(). Every flag value and env are split on
// commas; items are trimmed of spaces and empty items ignored, so a flag or
// env of only commas and spaces counts as empty. The single item "none" (any
// case) selects an empty list with Source SourceNone; "none" next to other
// items is an error. A malformed multiaddr is an error wrapping ErrInvalidAddr
// that names the item and its source. Whether an address names a peer is
// checked later, by Resolve.
func Select(flags []string, env string) (List, error) {
	if items := splitItems(flags...); len(items) > 0 {
		return parseItems(items, SourceFlag, "flag")
	}
	if items := splitItems(env); len(items) > 0 {
		return parseItems(items, SourceEnv, "env "+EnvVar)
	}
	return Default(), nil
}

func splitItems(values ...string) []string {
	var items []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
	}
	return items
}

func parseItems(items []string, source, where string) (List, error) {
	if len(items) == 1 && strings.EqualFold(items[0], None) {
		return List{Source: SourceNone}, nil
	}
	l := List{Addrs: make([]ma.Multiaddr, 0, len(items)), Source: source}
	for _, item := range items {
		if strings.EqualFold(item, None) {
			return List{}, fmt.Errorf("%w %q from %s: %q cannot be combined with addresses", ErrInvalidAddr, item, where, None)
		}
		a, err := ma.NewMultiaddr(item)
		if err != nil {
			return List{}, fmt.Errorf("%w %q from %s: %w", ErrInvalidAddr, item, where, err)
		}
		l.Addrs = append(l.Addrs, a)
	}
	return l, nil
}

// Resolve turns the list into peers. An address starting with /dnsaddr is
// resolved with r (nil means madns.DefaultResolver), following nested
// /dnsaddr records; every other address, given or resolved, must end in
// /p2p/<peer-id> after a transport part (other /dns* parts are left to the
// host to resolve when dialling). Addresses of the same peer are merged into
// one AddrInfo, peers in order of first appearance.
//
// An empty list (SourceNone) resolves to nil, nil. Otherwise failures of
// individual entries (lookup errors, no records, addresses without a peer ID,
// which wrap ErrInvalidAddr) do not stop the others: Resolve returns the peers
// it could resolve together with errors.Join of the failures, each naming its
// address. If no peer resolved, the error also wraps ErrNoPeers. ctx bounds
// the DNS lookups, which run one after another.
func (l List) Resolve(ctx context.Context, r *madns.Resolver) ([]peer.AddrInfo, error) {
	if len(l.Addrs) == 0 {
		return nil, nil
	}
	if r == nil {
		r = madns.DefaultResolver
	}
	type item struct{ addr, origin ma.Multiaddr }
	queue := make([]item, 0, len(l.Addrs))
	for _, a := range l.Addrs {
		queue = append(queue, item{addr: a})
	}
	var (
		infos   []peer.AddrInfo
		errs    []error
		lookups int
	)
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		from := ""
		if it.origin != nil {
			from = fmt.Sprintf(" (from %s)", it.origin)
		}
		if len(it.addr) == 0 || it.addr[0].Protocol().Code != ma.P_DNSADDR {
			id, transport := peerOf(it.addr)
			if id == "" {
				errs = append(errs, fmt.Errorf("%w %s%s: want <transport>/p2p/<peer-id>", ErrInvalidAddr, it.addr, from))
				continue
			}
			infos = addAddrs(infos, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{transport}})
			continue
		}
		if lookups == maxDNSLookups {
			errs = append(errs, fmt.Errorf("bootstrap: resolve %s%s: more than %d dnsaddr lookups", it.addr, from, maxDNSLookups))
			continue
		}
		lookups++
		resolved, err := r.Resolve(ctx, it.addr)
		if err == nil && len(resolved) == 0 {
			err = errors.New("no dnsaddr records")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bootstrap: resolve %s%s: %w", it.addr, from, err))
			continue
		}
		origin := it.origin
		if origin == nil {
			origin = it.addr
		}
		for _, a := range resolved {
			queue = append(queue, item{addr: a, origin: origin})
		}
	}
	if len(infos) == 0 {
		return nil, errors.Join(append([]error{ErrNoPeers}, errs...)...)
	}
	return infos, errors.Join(errs...)
}

// peerOf splits a /p2p address into its peer ID and non-empty transport part;
// the ID is empty if a is not such an address.
func peerOf(a ma.Multiaddr) (peer.ID, ma.Multiaddr) {
	transport, id := peer.SplitAddr(a)
	if id == "" || len(transport) == 0 {
		return "", nil
	}
	return id, transport
}

// addAddrs merges p into infos: a new peer is appended, the addresses of a
// known one are added to its entry unless already there. Peers without an ID
// are dropped. It returns the updated slice.
func addAddrs(infos []peer.AddrInfo, p peer.AddrInfo) []peer.AddrInfo {
	if p.ID == "" {
		return infos
	}
	i := slices.IndexFunc(infos, func(q peer.AddrInfo) bool { return q.ID == p.ID })
	if i < 0 {
		infos = append(infos, peer.AddrInfo{ID: p.ID})
		i = len(infos) - 1
	}
	for _, a := range p.Addrs {
		if len(a) > 0 && !slices.ContainsFunc(infos[i].Addrs, a.Equal) {
			infos[i].Addrs = append(infos[i].Addrs, a)
		}
	}
	return infos
}
