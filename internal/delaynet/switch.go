package delaynet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxFrame is the longest frame a 1500-byte MTU allows, with a VLAN tag.
const maxFrame = 1500 + 14 + 4

// port is the switch's side of one node's link.
type port struct {
	idx int
	mac [6]byte
	f   *os.File // AF_PACKET socket bound to the port's veth
	out chan frame
}

// frame is a frame waiting in a port's queue until due.
type frame struct {
	due time.Time
	b   []byte
}

// Packet describes a frame the switch took in, for Config.Trace. Src and
// Dst are set for IPv4 frames only; their ports for TCP and UDP only.
type Packet struct {
	Time  time.Time // when the switch read it
	From  int       // index of the node that sent it
	To    int       // index of the node it goes to; 0 when flooded or dropped
	Len   int       // frame length in bytes
	Proto uint8     // IP protocol: 6 TCP, 17 UDP; 0 for non-IPv4 frames
	Flags uint8     // TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10)
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// read takes frames in from one port until its socket is closed. A
// frame's time is the kernel's receive timestamp, so that a reader the
// scheduler runs late does not delay the frame further.
func (n *Network) read(p *port) {
	defer n.wg.Done()
	rc, err := p.f.SyscallConn()
	if err != nil {
		n.stats.errors.Add(1)
		return
	}
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for {
		var k, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			k, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil { // the file is closed (RawConn reports poll's own error, not os.ErrClosed)
			if !n.closing() {
				n.stats.errors.Add(1)
				n.log.Warn("port closed under the switch", "port", p.idx, "err", err)
			}
			return
		}
		if rerr != nil {
			n.stats.errors.Add(1)
			n.log.Debug("port read", "port", p.idx, "err", rerr)
			continue
		}
		at := rxTime(oob[:oobn])
		n.stats.frames.Add(1)
		n.stats.bytes.Add(uint64(k))
		if k < 14 {
			n.stats.dropped.Add(1)
			continue
		}
		if k > maxFrame {
			n.stats.oversize.Add(1)
			continue
		}
		n.forward(p, append([]byte(nil), buf[:k]...), at)
	}
}

// rxTime returns the kernel's receive timestamp from a recvmsg's control
// messages, or now when there is none.
func rxTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
				ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return time.Unix(ts.Unix())
			}
		}
	}
	return time.Now()
}

// forward learns the frame's source, answers ARP for known addresses, and
// queues the frame at its destination port, or at every other port.
func (n *Network) forward(in *port, b []byte, now time.Time) {
	dst, src := [6]byte(b[0:6]), [6]byte(b[6:12])
	if reply := n.arpReply(b); reply != nil {
		n.stats.arp.Add(1)
		if _, err := in.f.Write(reply); err != nil && !errors.Is(err, os.ErrClosed) {
			n.stats.errors.Add(1)
		}
		return
	}
	fr := frame{due: now.Add(n.cfg.Delay), b: b}
	var to *port
	var flood []*port
	n.mu.RLock()
	if src[0]&1 == 0 && n.macs[src] != in {
		n.mu.RUnlock()
		n.mu.Lock()
		n.macs[src] = in
		n.mu.Unlock()
		n.mu.RLock()
	}
	if dst[0]&1 == 0 {
		to = n.macs[dst]
	}
	if to == nil {
		flood = make([]*port, 0, len(n.ports))
		for _, p := range n.ports {
			if p != in {
				flood = append(flood, p)
			}
		}
	}
	n.mu.RUnlock()

	if tr := n.cfg.Trace; tr != nil {
		pk := describe(b)
		pk.Time, pk.From = now, in.idx
		if to != nil {
			pk.To = to.idx
		}
		tr(pk)
	}
	switch {
	case to == in:
		n.stats.dropped.Add(1) // a frame for a node's own address: the node's stack never sends one
	case to != nil:
		n.enqueue(to, fr)
	default:
		n.stats.flooded.Add(1)
		for _, p := range flood {
			n.enqueue(p, fr)
		}
	}
}

func (n *Network) enqueue(p *port, fr frame) {
	select {
	case p.out <- fr:
	default:
		n.stats.dropped.Add(1)
	}
}

// send writes a port's queued frames out, each at its due time, until the
// queue is closed. It keeps an OS thread of its own, at a higher priority
// than the processes under test when it may (nice -10), and sleeps with
// nanosleep: Go's timers wake on whole milliseconds, which would add up to
// a millisecond to each frame.
func (n *Network) send(p *port) {
	defer n.egress.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), -10) // only this thread; fails harmlessly without CAP_SYS_NICE
	rc, err := p.f.SyscallConn()
	if err != nil {
		n.stats.errors.Add(1)
		for range p.out {
		}
		return
	}
	for fr := range p.out {
		if d := time.Until(fr.due); d > 0 && !n.closing() {
			ts := unix.NsecToTimespec(int64(d))
			for unix.Nanosleep(&ts, &ts) == unix.EINTR {
			}
		}
		late := time.Since(fr.due)
		n.stats.late.Add(int64(late))
		n.stats.lateN.Add(1)
		if late > time.Millisecond {
			n.stats.late1ms.Add(1)
		}
		for {
			m := n.stats.maxLate.Load()
			if int64(late) <= m || n.stats.maxLate.CompareAndSwap(m, int64(late)) {
				break
			}
		}
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), fr.b)
			return werr != unix.EAGAIN
		})
		if err == nil {
			err = werr
		}
		if err != nil && !n.closing() {
			n.stats.errors.Add(1)
			n.log.Debug("port write", "port", p.idx, "err", err)
		}
	}
}

// arpReply returns the reply to an IPv4 ARP request for the address of a
// node the switch knows, or nil when b is anything else.
func (n *Network) arpReply(b []byte) []byte {
	if len(b) < 42 || binary.BigEndian.Uint16(b[12:14]) != 0x0806 {
		return nil
	}
	a := b[14:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != 0x0800 ||
		a[4] != 6 || a[5] != 4 || binary.BigEndian.Uint16(a[6:8]) != 1 {
		return nil
	}
	n.mu.RLock()
	mac, ok := n.arp[[4]byte(a[24:28])]
	n.mu.RUnlock()
	if !ok {
		return nil
	}
	return arpReplyFrame(mac, [4]byte(a[24:28]), [6]byte(a[8:14]), [4]byte(a[14:18]))
}

// arpReplyFrame builds the Ethernet frame of an ARP reply saying that ip
// is at mac, sent to the requester (reqMAC, reqIP).
func arpReplyFrame(mac [6]byte, ip [4]byte, reqMAC [6]byte, reqIP [4]byte) []byte {
	r := make([]byte, 42)
	copy(r[0:6], reqMAC[:])
	copy(r[6:12], mac[:])
	binary.BigEndian.PutUint16(r[12:14], 0x0806)
	a := r[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)      // Ethernet
	binary.BigEndian.PutUint16(a[2:4], 0x0800) // IPv4
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], 2) // reply
	copy(a[8:14], mac[:])
	copy(a[14:18], ip[:])
	copy(a[18:24], reqMAC[:])
	copy(a[24:28], reqIP[:])
	return r
}

// describe decodes what Packet reports of an Ethernet frame.
func describe(b []byte) Packet {
	pk := Packet{Len: len(b)}
	if len(b) < 34 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
		return pk
	}
	h := b[14:]
	ihl := int(h[0]&0x0f) * 4
	if h[0]>>4 != 4 || ihl < 20 || len(h) < ihl {
		return pk
	}
	pk.Proto = h[9]
	src, dst := netip.AddrFrom4([4]byte(h[12:16])), netip.AddrFrom4([4]byte(h[16:20]))
	var sp, dp uint16
	l4 := h[ihl:]
	fragment := binary.BigEndian.Uint16(h[6:8])&0x1fff != 0
	if (pk.Proto == 6 || pk.Proto == 17) && len(l4) >= 4 && !fragment {
		sp, dp = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		if pk.Proto == 6 && len(l4) >= 14 {
			pk.Flags = l4[13]
		}
	}
	pk.Src, pk.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return pk
}

func (n *Network) closing() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}
