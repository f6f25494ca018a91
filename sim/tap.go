package sim

import (
	"encoding/binary"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// A tap sees, at one node, each exchange of the cell instances protocol
// that the node starts: the request it sent and the response it got, at the
// moment the response's last byte arrived. Measure uses it to time the
// first valid record of a find and the first store of an announce, which
// dht.Find and dht.Publish do not report: they return when everything is
// in. It decodes the wire messages of the protocol (docs/records.md) on its
// own, so the DHT's code is exactly what runs in production.

// tapEvent is one exchange seen by a tap.
type tapEvent struct {
	At      time.Time // wall clock, when the response was complete
	Op      uint64    // 1 put, 2 get
	Name    string
	Error   string   // the response's error, if any
	Records [][]byte // the records of a get response
}

// The protocol's messages (dht/protocol.go), as far as the tap reads them.
type tapRequest struct {
	Op   uint64 `cbor:"1,keyasint"`
	Name string `cbor:"2,keyasint"`
}

type tapResponse struct {
	Error   string   `cbor:"1,keyasint,omitempty"`
	Records [][]byte `cbor:"2,keyasint,omitempty"`
}

// maxTapMessage bounds what a tap buffers of one message (the protocol's
// largest response).
const maxTapMessage = 2 << 20

// setTap makes the meter's node report its exchanges to fn from the next
// stream it opens on; nil stops it.
func (m *meter) setTap(fn func(tapEvent)) {
	if fn == nil {
		m.tap.Store(nil)
		return
	}
	m.tap.Store(&fn)
}

// streamTap follows one stream: the first message written (the request)
// and the first read (the response).
type streamTap struct {
	fn   func(tapEvent)
	mu   sync.Mutex
	req  frameBuf
	resp frameBuf
	ev   tapEvent
	done bool
}

func (t *streamTap) wrote(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if msg, ok := t.req.feed(p); ok {
		var r tapRequest
		if cbor.Unmarshal(msg, &r) == nil {
			t.ev.Op, t.ev.Name = r.Op, r.Name
		}
	}
}

func (t *streamTap) read(p []byte) {
	t.mu.Lock()
	msg, ok := t.resp.feed(p)
	if !ok || t.done {
		t.mu.Unlock()
		return
	}
	t.done = true
	ev := t.ev
	t.mu.Unlock()
	var r tapResponse
	if cbor.Unmarshal(msg, &r) != nil {
		return
	}
	ev.At, ev.Error, ev.Records = time.Now(), r.Error, r.Records
	t.fn(ev)
}

// frameBuf gathers the first varint-length-prefixed message of a byte
// stream, however it is chunked.
type frameBuf struct {
	b    []byte
	done bool
}

// feed adds p and returns the message once it is complete (once only).
func (f *frameBuf) feed(p []byte) ([]byte, bool) {
	if f.done || len(p) == 0 {
		return nil, false
	}
	f.b = append(f.b, p...)
	n, k := binary.Uvarint(f.b)
	switch {
	case k == 0:
		return nil, false // the length is not all there yet
	case k < 0 || n > maxTapMessage:
		f.done, f.b = true, nil
		return nil, false
	case uint64(len(f.b)-k) < n:
		return nil, false
	}
	f.done = true
	msg := f.b[k : k+int(n)]
	f.b = nil
	return msg, true
}
