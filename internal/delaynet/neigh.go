package delaynet

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// neighbours writes permanent entries into one node namespace's
// neighbour (ARP) table, over a netlink socket opened in that namespace.
//
// Why permanent entries: the kernel keeps one ARP table for all network
// namespaces, and its garbage-collection thresholds
// (net.ipv4.neigh.default.gc_thresh3, 1024 by default) bound the entries of
// every namespace together. Nodes that each talk to most others need about
// n² entries: 32 cellnode processes in a full DHT mesh fill 1024, and from
// then on a namespace that needs a new entry gets ENOBUFS on every send to
// it ("neighbour: arp_cache: neighbor table overflow!") until others
// expire, which is how late nodes of the netns benchmark never reached the
// bootstrap node. Permanent entries are exempt from those thresholds, and
// they are what the switch's ARP answers stood for anyway: a warm cache,
// no round trip for the first packet to a peer.
type neighbours struct {
	fd      int // NETLINK_ROUTE socket bound in the node's namespace; closed by close
	ifindex int // eth0's index in that namespace
	seq     uint32
}

// openNeighbours opens the netlink socket of the calling thread's
// namespace for the interface dev.
func openNeighbours(dev string) (*neighbours, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, fmt.Errorf("neighbours %s: %w", dev, err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("neighbours %s: netlink socket: %w", dev, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("neighbours %s: bind netlink: %w", dev, err)
	}
	return &neighbours{fd: fd, ifindex: ifi.Index}, nil
}

func (nb *neighbours) close() { unix.Close(nb.fd) }

// add sets a permanent entry: addr is at mac (ip neigh replace addr lladdr
// mac nud permanent dev eth0). It waits for the kernel's answer.
func (nb *neighbours) add(addr netip.Addr, mac net.HardwareAddr) error {
	nb.seq++
	msg := neighMsg(nb.seq, nb.ifindex, addr.As4(), [6]byte(mac))
	if err := unix.Sendto(nb.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("neighbour %s: send: %w", addr, err)
	}
	buf := make([]byte, 4096)
	for {
		k, _, err := unix.Recvfrom(nb.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("neighbour %s: receive: %w", addr, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:k])
		if err != nil {
			return fmt.Errorf("neighbour %s: %w", addr, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != nb.seq || m.Header.Type != syscall.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data[0:4])); errno != 0 {
				return fmt.Errorf("neighbour %s: %w", addr, unix.Errno(-errno))
			}
			return nil
		}
	}
}

// neighMsg is the RTM_NEWNEIGH request of add: a header, an ndmsg, and the
// NDA_DST and NDA_LLADDR attributes.
func neighMsg(seq uint32, ifindex int, ip [4]byte, mac [6]byte) []byte {
	const (
		hdr   = unix.SizeofNlMsghdr
		nd    = unix.SizeofNdMsg
		dstA  = 4 + 4
		llA   = 4 + 6
		total = hdr + nd + dstA + (llA+3)&^3
	)
	b := make([]byte, total)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:4], total)
	ne.PutUint16(b[4:6], unix.RTM_NEWNEIGH)
	ne.PutUint16(b[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	ne.PutUint32(b[8:12], seq)
	m := b[hdr:]
	m[0] = unix.AF_INET
	ne.PutUint32(m[4:8], uint32(ifindex))
	ne.PutUint16(m[8:10], unix.NUD_PERMANENT)
	a := m[nd:]
	ne.PutUint16(a[0:2], dstA)
	ne.PutUint16(a[2:4], unix.NDA_DST)
	copy(a[4:8], ip[:])
	a = a[dstA:]
	ne.PutUint16(a[0:2], llA)
	ne.PutUint16(a[2:4], unix.NDA_LLADDR)
	copy(a[4:10], mac[:])
	return b
}
