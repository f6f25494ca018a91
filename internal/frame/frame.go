// Package frame reads the unsigned-varint length-prefixed frames of
// cellnode's protocols (the framing of go-msgio's varint reader).
//
// go-msgio allocates the length a frame's prefix announces before reading
// the frame, so a peer that announces the largest frame allowed and sends
// nothing costs that much memory per stream. Reader allocates as the bytes
// arrive instead: at most about twice what the peer actually sent.
package frame

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned for a frame whose prefix announces more than the
// reader's maximum; nothing of it is read.
var ErrTooLarge = errors.New("frame: too large")

// Reader reads frames of at most a given size from a stream.
type Reader struct {
	r   *bufio.Reader
	max int
}

// NewReader returns a Reader of frames of at most max bytes from r.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// Next returns the next frame. It returns io.EOF only when the stream ends
// cleanly between frames, and io.ErrUnexpectedEOF when it ends inside one.
func (fr *Reader) Next() ([]byte, error) {
	n, err := binary.ReadUvarint(fr.r)
	if err != nil {
		return nil, err // io.EOF between frames, io.ErrUnexpectedEOF in a prefix, or an overflow
	}
	if n > uint64(fr.max) {
		return nil, fmt.Errorf("%w: %d bytes announced, at most %d", ErrTooLarge, n, fr.max)
	}
	b, err := io.ReadAll(io.LimitReader(fr.r, int64(n)))
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) != n {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}
