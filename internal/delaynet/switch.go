package delaynet

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxFrame is the longest frame a 1500-byte MTU allows, with a VLAN tag.
const maxFrame = 1500 + 14 + 4

// port is the switch's side of one node's link.
type port struct {
	idx  int
	mac  [6]byte
	addr netip.Addr
	fd   int         // non-blocking AF_PACKET socket bound to the port's veth; closed by Network.Close
	nb   *neighbours // the node namespace's neighbour table; closed with fd
	out  chan frame
}

func (p *port) close() {
	unix.Close(p.fd)
	p.nb.close()
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

// read takes frames in from one port until the network closes. It keeps
// an OS thread of its own (see switchThread) and blocks in poll(2) on the
// socket and the network's wake-up eventfd. A frame's time is the kernel's
// receive timestamp, so that a reader run late does not delay it further.
func (n *Network) read(p *port) {
	defer n.wg.Done()
	defer switchThread()()
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}, {Fd: int32(n.wake), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			n.stats.errors.Add(1)
			n.log.Warn("port poll", "port", p.idx, "err", err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		for {
			k, oobn, _, _, err := unix.Recvmsg(p.fd, buf, oob, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN || err == unix.EINTR {
				break
			}
			if err != nil {
				n.stats.errors.Add(1)
				n.log.Debug("port read", "port", p.idx, "err", err)
				break
			}
			at := rxTime(oob[:oobn])
			n.stats.frames.Add(1)
			n.stats.bytes.Add(uint64(k))
			switch {
			case k < 14:
				n.stats.dropped.Add(1)
			case k > maxFrame:
				n.stats.oversize.Add(1)
			default:
				n.forward(p, append([]byte(nil), buf[:k]...), at)
			}
		}
	}
}

// switchThread locks the calling goroutine to its OS thread and raises
// that thread above the processes under test, so that frames are not held
// up while those processes keep the CPUs busy: SCHED_FIFO at priority 10
// when it may (root), else nice -10, else as it was. The switch's threads
// only block (poll, nanosleep) or do a few microseconds of work per frame,
// and the kernel's real-time throttling bounds them anyway. It returns the
// function that lowers the thread again and unlocks it; a thread that
// cannot be lowered stays locked, so Go ends it with its goroutine.
func switchThread() func() {
	runtime.LockOSThread()
	raised := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 10}, 0) == nil
	if !raised {
		raised = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), -10) == nil
	}
	return func() {
		if !raised || unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0) == nil {
			runtime.UnlockOSThread()
		}
	}
}

// write sends one frame out of a port, waiting for room in its socket
// buffer (at most a second) if need be.
func (n *Network) write(p *port, b []byte) {
	for range 1000 {
		_, err := unix.Write(p.fd, b)
		switch err {
		case nil:
			return
		case unix.EAGAIN, unix.ENOBUFS, unix.EINTR:
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLOUT}}, 1)
			continue
		}
		n.stats.errors.Add(1)
		n.log.Debug("port write", "port", p.idx, "err", err)
		return
	}
	n.stats.dropped.Add(1)
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
		n.write(in, reply)
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
// queue is closed. It keeps an OS thread of its own (see switchThread) and
// sleeps with nanosleep: Go's timers wake on whole milliseconds, which
// would add up to a millisecond to each frame.
func (n *Network) send(p *port) {
	defer n.egress.Done()
	defer switchThread()()
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
		if late > 5*time.Millisecond {
			n.stats.late5ms.Add(1)
		}

		for {
			m := n.stats.maxLate.Load()
			if int64(late) <= m || n.stats.maxLate.CompareAndSwap(m, int64(late)) {
				break
			}
		}
		if !n.closing() {
			n.write(p, fr.b)
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
