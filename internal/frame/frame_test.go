package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/libp2p/go-msgio"
)

func frames(t testing.TB, msgs ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := msgio.NewVarintWriter(&buf)
	for _, m := range msgs {
		if err := w.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestNext(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 10_000)
	r := NewReader(bytes.NewReader(frames(t, []byte("a"), nil, big)), len(big))
	for _, want := range [][]byte{[]byte("a"), {}, big} {
		got, err := r.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Next = %d bytes, %v; want %d", len(got), err, len(want))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestNextRejects(t *testing.T) {
	prefix := func(n uint64) []byte { return binary.AppendUvarint(nil, n) }
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"too large", append(prefix(101), make([]byte, 101)...), ErrTooLarge},
		{"cut in the prefix", []byte{0x80}, io.ErrUnexpectedEOF},
		{"cut in the frame", append(prefix(10), 1, 2, 3), io.ErrUnexpectedEOF},
		{"prefix overflows", bytes.Repeat([]byte{0xff}, 11), nil},
	} {
		_, err := NewReader(bytes.NewReader(tc.in), 100).Next()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// A frame that announces 32 MiB and sends 10 bytes costs next to nothing,
// where msgio allocates the 32 MiB up front.
func TestNextAllocatesWhatArrives(t *testing.T) {
	const announced = 32 << 20
	in := append(binary.AppendUvarint(nil, announced), make([]byte, 10)...)
	alloc := func(read func()) uint64 {
		var a, b runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		read()
		runtime.ReadMemStats(&b)
		return b.TotalAlloc - a.TotalAlloc
	}
	ours := alloc(func() { _, _ = NewReader(bytes.NewReader(in), announced).Next() })
	theirs := alloc(func() { _, _ = msgio.NewVarintReaderSize(bytes.NewReader(in), announced).ReadMsg() })
	if ours > 64<<10 {
		t.Errorf("Next allocated %d bytes for 10 received", ours)
	}
	t.Logf("32 MiB announced, 10 bytes sent: frame.Reader allocated %d bytes, msgio %d", ours, theirs)
}

func FuzzNext(f *testing.F) {
	f.Add(frames(f, []byte("hello"), nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x05, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 1024)
		for range 100 {
			b, err := r.Next()
			if err != nil {
				return
			}
			if len(b) > 1024 {
				t.Fatalf("frame of %d bytes past the maximum", len(b))
			}
		}
	})
}
