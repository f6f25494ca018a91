package sim

import (
	"context"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cellnode/cellnode/dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// kind is a class of request message.
type kind int

// The kad-dht kinds are numbered as kad-dht's pb.Message_MessageType.
const (
	kindPutValue kind = iota
	kindGetValue
	kindAddProvider
	kindGetProviders
	kindFindNode
	kindPing
	kindKadOther
	kindCell // a request of the instances protocol (dht.ProtocolID)
	// Requests of the instances protocol by op, as a server counts them
	// (framer.cellOps); a malformed one is kindCell.
	kindCellGet
	kindCellPut
	numKinds
)

func (k kind) String() string {
	switch k {
	case kindPutValue:
		return "kad_put_value"
	case kindGetValue:
		return "kad_get_value"
	case kindAddProvider:
		return "kad_add_provider"
	case kindGetProviders:
		return "kad_get_providers"
	case kindFindNode:
		return "kad_find_node"
	case kindPing:
		return "kad_ping"
	case kindCell:
		return "cell"
	case kindCellGet:
		return "cell_get"
	case kindCellPut:
		return "cell_put"
	}
	return "kad_other"
}

// meter counts the request messages one node sends on the kad-dht and cell
// protocols, by kind, and the bytes it sends and receives on the streams it
// opens; or, as a node's serving meter, the requests it receives and the
// bytes of the streams others open to it (see servedStream). It is safe
// for concurrent use.
type meter struct {
	msgs           [numKinds]atomic.Uint64
	sent, received atomic.Uint64
	tap            atomic.Pointer[func(tapEvent)] // see setTap
}

// tally is a snapshot of one or more meters.
type tally struct {
	msgs        [numKinds]uint64
	sent, recvd uint64
}

func (m *meter) snapshot() tally {
	var t tally
	for k := range t.msgs {
		t.msgs[k] = m.msgs[k].Load()
	}
	t.sent, t.recvd = m.sent.Load(), m.received.Load()
	return t
}

func (t tally) add(u tally) tally {
	for k := range t.msgs {
		t.msgs[k] += u.msgs[k]
	}
	t.sent += u.sent
	t.recvd += u.recvd
	return t
}

func (t tally) sub(u tally) tally {
	for k := range t.msgs {
		t.msgs[k] -= u.msgs[k]
	}
	t.sent -= u.sent
	t.recvd -= u.recvd
	return t
}

// total is the number of messages of every kind.
func (t tally) total() uint64 {
	var n uint64
	for _, v := range t.msgs {
		n += v
	}
	return n
}

// byKind returns the non-zero message counts by kind name.
func (t tally) byKind() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range t.msgs {
		if v != 0 {
			out[kind(k).String()] = v
		}
	}
	return out
}

// meteredHost is a node's host as the node sees it: its outgoing streams
// are counted, and it links itself on the mocknet to any member of the
// network it dials (see Network.link). kad-dht and the cell DHT open every
// request stream through NewStream and dial through Connect or NewStream,
// so wrapping the host given to node.New sees all their requests.
type meteredHost struct {
	host.Host
	m    *meter
	nw   *Network
	self *member
}

// Connect links to p's node first, then connects.
func (h *meteredHost) Connect(ctx context.Context, pi peer.AddrInfo) error {
	h.nw.link(h.self, pi.ID)
	return h.Host.Connect(ctx, pi)
}

// NewStream opens a stream and counts what is written to it and read from
// it, when it speaks kad-dht or the cell protocol.
func (h *meteredHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	h.nw.link(h.self, p)
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return h.metered(s), nil
}

// OpenStream is NewStream for the cell DHT's requests, which do not wait
// for identify (dht.StreamOpener).
func (h *meteredHost) OpenStream(ctx context.Context, p peer.ID, proto protocol.ID) (network.Stream, error) {
	h.nw.link(h.self, p)
	s, err := dht.OpenStream(ctx, h.Host, p, proto)
	if err != nil {
		return nil, err
	}
	return h.metered(s), nil
}

// DialPeer links to p's node first, then dials it without waiting for
// identify (dht.StreamOpener).
func (h *meteredHost) DialPeer(ctx context.Context, p peer.ID) error {
	h.nw.link(h.self, p)
	if h.Network().Connectedness(p) == network.Connected {
		return nil
	}
	_, err := h.Network().DialPeer(ctx, p)
	return err
}

// metered wraps an outgoing stream so that its messages are counted when it
// speaks kad-dht or the cell protocol.
func (h *meteredHost) metered(s network.Stream) network.Stream {
	s = h.nw.keepLatency(s)
	proto := s.Protocol()
	switch {
	case proto == dht.ProtocolID:
		ms := &meteredStream{Stream: s, m: h.m, f: framer{cell: true}}
		if tap := h.m.tap.Load(); tap != nil {
			ms.tap = &streamTap{fn: *tap}
		}
		return ms
	case strings.HasPrefix(string(proto), dht.ProtocolPrefix+"/kad/"):
		return &meteredStream{Stream: s, m: h.m}
	}
	return s
}

// meteredStream counts the messages written to a stream and its bytes. It
// is used by one writer at a time, as libp2p streams are.
type meteredStream struct {
	network.Stream
	m   *meter
	f   framer
	tap *streamTap // nil unless the node's meter has a tap
}

func (s *meteredStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	s.m.sent.Add(uint64(n))
	s.f.feed(p[:n], func(k kind) { s.m.msgs[k].Add(1) })
	if s.tap != nil {
		s.tap.wrote(p[:n])
	}
	return n, err
}

func (s *meteredStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	s.m.received.Add(uint64(n))
	if s.tap != nil {
		s.tap.read(p[:n])
	}
	return n, err
}

// framer splits a byte stream of varint-length-prefixed messages, however
// it is chunked, and classifies each message from its first bytes. A kad-dht
// message is a protobuf whose field 1 is its type; Go's protobuf encoder
// writes fields in number order and leaves out a zero type (PUT_VALUE), so
// a message that does not start with field 1 is a PUT_VALUE.
type framer struct {
	cell    bool // every message is a cell request
	cellOps bool // every message is a cell request, classified by op

	inFrame bool
	length  uint64 // varint being read
	shift   uint
	left    uint64 // body bytes still to come
	head    [11]byte
	headN   int
}

func (f *framer) feed(p []byte, emit func(kind)) {
	for len(p) > 0 {
		if !f.inFrame {
			b := p[0]
			p = p[1:]
			f.length |= uint64(b&0x7f) << f.shift
			f.shift += 7
			if b < 0x80 || f.shift > 63 {
				f.inFrame, f.left, f.headN = true, f.length, 0
				f.length, f.shift = 0, 0
				if f.left == 0 {
					f.finish(emit)
				}
			}
			continue
		}
		n := uint64(len(p))
		if n > f.left {
			n = f.left
		}
		f.headN += copy(f.head[f.headN:], p[:n])
		p = p[n:]
		f.left -= n
		if f.left == 0 {
			f.finish(emit)
		}
	}
}

func (f *framer) finish(emit func(kind)) {
	f.inFrame = false
	head := f.head[:f.headN]
	if f.cell {
		emit(kindCell)
		return
	}
	if f.cellOps {
		// A CBOR map whose first key is 1 (Op), a small unsigned value.
		switch {
		case len(head) >= 3 && head[0]&0xe0 == 0xa0 && head[1] == 0x01 && head[2] == 0x02:
			emit(kindCellGet)
		case len(head) >= 3 && head[0]&0xe0 == 0xa0 && head[1] == 0x01 && head[2] == 0x01:
			emit(kindCellPut)
		default:
			emit(kindCell)
		}
		return
	}
	if len(head) == 0 || head[0] != 0x08 { // field 1, varint
		emit(kindPutValue)
		return
	}
	t, n := binary.Uvarint(head[1:])
	if n <= 0 || t >= uint64(kindKadOther) {
		emit(kindKadOther)
		return
	}
	emit(kind(t))
}

// SetStreamHandler registers handler with the inbound streams wrapped so
// that closing them keeps the link's latency (see latencyStream).
func (h *meteredHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) { handler(h.nw.keepLatency(h.served(pid, s))) })
}

// SetStreamHandlerMatch is SetStreamHandler with a protocol matcher.
func (h *meteredHost) SetStreamHandlerMatch(pid protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, match, func(s network.Stream) { handler(h.nw.keepLatency(h.served("", s))) })
}

// latencyStream works around mocknet's streams, which deliver the data
// still in flight at once when the writer closes: a request written and
// closed (CloseWrite), or an answer written and closed, would cross the
// link without its latency, as the cell protocol does on every request.
// Closing a latencyStream first waits until the last write has arrived.
type latencyStream struct {
	network.Stream
	nw  *Network
	due atomic.Int64 // unix nanoseconds when the last write arrives
}

func (nw *Network) keepLatency(s network.Stream) network.Stream {
	return &latencyStream{Stream: s, nw: nw}
}

func (s *latencyStream) Write(p []byte) (int, error) {
	if d := s.nw.pairLatency(s.Conn().LocalPeer(), s.Conn().RemotePeer()); d > 0 {
		s.due.Store(max(s.due.Load(), time.Now().Add(d).UnixNano()))
	}
	return s.Stream.Write(p)
}

func (s *latencyStream) wait() {
	if d := time.Until(time.Unix(0, s.due.Load())); d > 0 {
		time.Sleep(d)
	}
}

func (s *latencyStream) CloseWrite() error {
	s.wait()
	return s.Stream.CloseWrite()
}

func (s *latencyStream) Close() error {
	s.wait()
	return s.Stream.Close()
}
