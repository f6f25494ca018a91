package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// The CBOR subset of records and delegations (docs/records.md, "Encoding"),
// read by hand so that what is malformed and what is merely not canonical is
// decided here, in a few lines a second implementation can follow, and not
// by a general decoder's options.
//
// A cborValue is one data item: an unsigned or negative integer, a byte or
// text string, an array, a map whose keys are unsigned integers, or false or
// true. Nothing else decodes: no tags, no floats, no null or undefined, no
// other simple values, no indefinite lengths.
type cborValue struct {
	major byte        // 0 uint, 1 negative int, 2 bytes, 3 text, 4 array, 5 map, 7 false/true
	n     uint64      // 0: the value; 1: the value is -1-n; 7: 0 false, 1 true
	b     []byte      // 2, 3: the content (aliases the input)
	keys  []uint64    // 5: the keys, in the order read
	items []cborValue // 4: the elements; 5: the values, one per key
}

const (
	majorUint  = 0
	majorNeg   = 1
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
	majorTag   = 6
	majorOther = 7
)

// maxCBORDepth is the deepest nesting that decodes: the top-level item is
// at depth 1, the items of an array or map at depth d are at d+1.
const maxCBORDepth = 8

// decodeCBOR reads data as exactly one data item of the subset. Any failure
// is ErrMalformed: not well-formed, truncated, trailing bytes, a feature
// outside the subset, invalid UTF-8, nesting over maxCBORDepth, a map key
// that is not an unsigned integer, or a key twice in one map. It does not
// check that the encoding is the canonical one: see canonicalCBOR.
func decodeCBOR(data []byte) (cborValue, error) {
	d := cborReader{data: data}
	v, err := d.item(1)
	if err == nil && d.off != len(data) {
		err = fmt.Errorf("%d trailing bytes", len(data)-d.off)
	}
	if err != nil {
		return cborValue{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return v, nil
}

type cborReader struct {
	data []byte
	off  int
}

// head reads an initial byte and its argument.
func (d *cborReader) head() (major, info byte, arg uint64, err error) {
	if d.off >= len(d.data) {
		return 0, 0, 0, errors.New("truncated")
	}
	ib := d.data[d.off]
	d.off++
	major, info = ib>>5, ib&0x1f
	var n int
	switch {
	case info < 24:
		return major, info, uint64(info), nil
	case info == 24:
		n = 1
	case info == 25:
		n = 2
	case info == 26:
		n = 4
	case info == 27:
		n = 8
	case info == 31:
		return 0, 0, 0, errors.New("indefinite length")
	default:
		return 0, 0, 0, fmt.Errorf("reserved additional information %d", info)
	}
	if len(d.data)-d.off < n {
		return 0, 0, 0, errors.New("truncated")
	}
	var buf [8]byte
	copy(buf[8-n:], d.data[d.off:d.off+n])
	d.off += n
	return major, info, binary.BigEndian.Uint64(buf[:]), nil
}

func (d *cborReader) item(depth int) (cborValue, error) {
	if depth > maxCBORDepth {
		return cborValue{}, fmt.Errorf("nested more than %d deep", maxCBORDepth)
	}
	major, info, arg, err := d.head()
	if err != nil {
		return cborValue{}, err
	}
	v := cborValue{major: major}
	rest := uint64(len(d.data) - d.off)
	switch major {
	case majorUint, majorNeg:
		v.n = arg
	case majorBytes, majorText:
		if arg > rest {
			return v, errors.New("truncated")
		}
		v.b = d.data[d.off : d.off+int(arg)]
		d.off += int(arg)
		if major == majorText && !utf8.Valid(v.b) {
			return v, errors.New("text string is not valid UTF-8")
		}
	case majorArray:
		if arg > rest { // every element takes at least one byte
			return v, errors.New("truncated")
		}
		v.items = make([]cborValue, 0, arg)
		for range arg {
			e, err := d.item(depth + 1)
			if err != nil {
				return v, err
			}
			v.items = append(v.items, e)
		}
	case majorMap:
		if arg > rest/2 {
			return v, errors.New("truncated")
		}
		v.keys = make([]uint64, 0, arg)
		v.items = make([]cborValue, 0, arg)
		seen := make(map[uint64]bool, arg)
		for range arg {
			k, err := d.item(depth + 1)
			if err != nil {
				return v, err
			}
			if k.major != majorUint {
				return v, errors.New("map key is not an unsigned integer")
			}
			if seen[k.n] {
				return v, fmt.Errorf("map key %d twice", k.n)
			}
			seen[k.n] = true
			e, err := d.item(depth + 1)
			if err != nil {
				return v, err
			}
			v.keys = append(v.keys, k.n)
			v.items = append(v.items, e)
		}
	case majorTag:
		return v, errors.New("tag")
	default: // majorOther
		switch info {
		case 20:
			v.n = 0
		case 21:
			v.n = 1
		default:
			return v, fmt.Errorf("simple value or float (initial byte %#x)", 0xe0|info)
		}
	}
	return v, nil
}

// encodeCBOR appends the canonical encoding of v (RFC 8949 §4.2.1, core
// deterministic: shortest heads, map keys in ascending order) to out.
func encodeCBOR(out []byte, v cborValue) []byte {
	switch v.major {
	case majorUint, majorNeg:
		return appendHead(out, v.major, v.n)
	case majorBytes, majorText:
		return append(appendHead(out, v.major, uint64(len(v.b))), v.b...)
	case majorArray:
		out = appendHead(out, majorArray, uint64(len(v.items)))
		for _, e := range v.items {
			out = encodeCBOR(out, e)
		}
		return out
	case majorMap:
		order := make([]int, len(v.keys))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			switch {
			case v.keys[a] < v.keys[b]:
				return -1
			case v.keys[a] > v.keys[b]:
				return 1
			}
			return 0
		})
		out = appendHead(out, majorMap, uint64(len(v.keys)))
		for _, i := range order {
			out = appendHead(out, majorUint, v.keys[i])
			out = encodeCBOR(out, v.items[i])
		}
		return out
	default:
		return append(out, 0xf4+byte(v.n))
	}
}

func appendHead(out []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(out, m|byte(n))
	case n <= 0xff:
		return append(out, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(out, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(out, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(out, m|27), n)
	}
}

// canonicalCBOR re-encodes v and reports ErrNonCanonical unless that gives
// exactly raw, the bytes v was decoded from.
func canonicalCBOR(raw []byte, v cborValue) error {
	if !bytes.Equal(encodeCBOR(make([]byte, 0, len(raw)), v), raw) {
		return fmt.Errorf("%w: re-encoding gives other bytes", ErrNonCanonical)
	}
	return nil
}

// cborMap is a decoded map read field by field against a schema. Each
// accessor records the first schema violation in err; later calls do
// nothing once err is set.
type cborMap struct {
	what string // "envelope", "record body", ...
	v    cborValue
	err  error
}

// asMap checks that v is a map whose keys are all in allowed and that has
// every key of required.
func asMap(what string, v cborValue, allowed, required []uint64) *cborMap {
	m := &cborMap{what: what, v: v}
	if v.major != majorMap {
		m.err = fmt.Errorf("%w: %s is not a map", ErrMalformed, what)
		return m
	}
	for _, k := range v.keys {
		if !slices.Contains(allowed, k) {
			m.err = fmt.Errorf("%w: %s has unknown key %d", ErrMalformed, what, k)
			return m
		}
	}
	for _, k := range required {
		if !slices.Contains(v.keys, k) {
			m.err = fmt.Errorf("%w: %s lacks key %d", ErrMalformed, what, k)
			return m
		}
	}
	return m
}

func (m *cborMap) get(k uint64) (cborValue, bool) {
	if m.err != nil {
		return cborValue{}, false
	}
	i := slices.Index(m.v.keys, k)
	if i < 0 {
		return cborValue{}, false
	}
	return m.v.items[i], true
}

func (m *cborMap) typeErr(k uint64, want string) {
	m.err = fmt.Errorf("%w: %s key %d is not %s", ErrMalformed, m.what, k, want)
}

// emptyErr is the error of an optional field present with its empty value:
// it must be left out instead, so that a record has one encoding.
func (m *cborMap) emptyErr(k uint64) {
	m.err = fmt.Errorf("%w: %s key %d is present but empty (leave it out)", ErrMalformed, m.what, k)
}

func (m *cborMap) uint(k uint64) uint64 {
	v, ok := m.get(k)
	if ok && v.major != majorUint {
		m.typeErr(k, "an unsigned integer")
	}
	return v.n
}

// bytes returns key k's byte string; optional ones must not be empty.
func (m *cborMap) bytes(k uint64, optional bool) []byte {
	v, ok := m.get(k)
	switch {
	case !ok:
		return nil
	case v.major != majorBytes:
		m.typeErr(k, "a byte string")
	case optional && len(v.b) == 0:
		m.emptyErr(k)
	}
	return v.b
}

// text returns key k's text string; optional ones must not be empty.
func (m *cborMap) text(k uint64, optional bool) string {
	v, ok := m.get(k)
	switch {
	case !ok:
		return ""
	case v.major != majorText:
		m.typeErr(k, "a text string")
	case optional && len(v.b) == 0:
		m.emptyErr(k)
	}
	return string(v.b)
}

// texts returns key k's array of text strings (never nil when present).
func (m *cborMap) texts(k uint64) []string {
	v, ok := m.get(k)
	if !ok {
		return nil
	}
	if v.major != majorArray {
		m.typeErr(k, "an array")
		return nil
	}
	out := make([]string, 0, len(v.items))
	for _, e := range v.items {
		if e.major != majorText {
			m.typeErr(k, "an array of text strings")
			return nil
		}
		out = append(out, string(e.b))
	}
	return out
}

// optUint returns key k's unsigned integer and whether it is present.
func (m *cborMap) optUint(k uint64) (uint64, bool) {
	v, ok := m.get(k)
	if ok && v.major != majorUint {
		m.typeErr(k, "an unsigned integer")
	}
	return v.n, ok
}

// flag returns key k's boolean, which (being optional) must be true.
func (m *cborMap) flag(k uint64) bool {
	v, ok := m.get(k)
	switch {
	case !ok:
		return false
	case v.major != majorOther:
		m.typeErr(k, "a boolean")
	case v.n == 0:
		m.emptyErr(k)
	}
	return v.n == 1
}
