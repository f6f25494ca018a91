package sim

import (
	"encoding/binary"
	"slices"
	"testing"
)

// frame returns a varint-length-prefixed message.
func frame(body []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

func TestFramer(t *testing.T) {
	big := make([]byte, 300) // a two-byte length prefix
	big[0], big[1] = 0x08, byte(kindGetProviders)
	var stream []byte
	for _, body := range [][]byte{
		{0x08, byte(kindFindNode), 0x12, 0x01, 'k'}, // type FIND_NODE, key "k"
		{0x12, 0x01, 'k', 0x1a, 0x00},               // no type field: PUT_VALUE
		{},                                          // empty: PUT_VALUE
		big,                                         // GET_PROVIDERS, long
		{0x08, 0x09},                                // unknown type
		{0x08, byte(kindPing)},
	} {
		stream = append(stream, frame(body)...)
	}
	want := []kind{kindFindNode, kindPutValue, kindPutValue, kindGetProviders, kindKadOther, kindPing}

	for _, tc := range []struct {
		name  string
		chunk int
	}{
		{"whole", len(stream)},
		{"bytewise", 1},
		{"threes", 3},
		{"odd", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f framer
			var got []kind
			for p := stream; len(p) > 0; {
				n := min(tc.chunk, len(p))
				f.feed(p[:n], func(k kind) { got = append(got, k) })
				p = p[n:]
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}

	t.Run("cell", func(t *testing.T) {
		f := framer{cell: true}
		n := 0
		f.feed(append(frame([]byte{0xa1, 0x01, 0x01}), frame([]byte{0xa1, 0x01, 0x02})...), func(k kind) {
			if k != kindCell {
				t.Fatalf("kind %v", k)
			}
			n++
		})
		if n != 2 {
			t.Fatalf("%d cell messages, want 2", n)
		}
	})
}
