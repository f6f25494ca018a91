// Package wire holds the messages of the instances protocol
// (/cell/instances/1.0.0, docs/records.md): one varint-length-prefixed CBOR
// Request and one Response per stream. dht speaks it; the attack suite and
// the fuzz targets build and read the same structs, so that no copy of them
// can drift from the protocol.
package wire

import "github.com/fxamacker/cbor/v2"

// The operations of a Request.
const (
	OpPut = 1 // store Record in the set of Name (or of Name and Publisher)
	OpGet = 2 // return the records of that set
)

// Request is what a node asks of a storer.
type Request struct {
	Op     uint64 `cbor:"1,keyasint"`
	Name   string `cbor:"2,keyasint"`
	Record []byte `cbor:"3,keyasint,omitempty"`
	// Publisher, when set, names the set of that publisher's records for
	// the name instead of the name's own set.
	Publisher []byte `cbor:"4,keyasint,omitempty"`
	// Shard names shard Shard of that set (0, omitted, is the set
	// itself): the set under the key of docs/records.md, "Shards".
	Shard uint64 `cbor:"5,keyasint,omitempty"`
	// Forward (PUT) asks the peer to store the record also at the peers
	// closest to the set's key that it is connected to, when the record
	// is its sender's own (see dht/forward.go); a forwarded PUT is not
	// marked.
	Forward bool `cbor:"6,keyasint,omitempty"`
	// MoreShards (GET of shard 0) asks the storer to answer every shard
	// of the set it holds in the one response, as far as its size allows
	// (see Response.More), so that a finder does not wait for shard
	// 0's answer to learn the shard count before it asks the others.
	MoreShards bool `cbor:"7,keyasint,omitempty"`
}

// Response is a storer's answer.
type Response struct {
	Error   string   `cbor:"1,keyasint,omitempty"`
	Records [][]byte `cbor:"2,keyasint,omitempty"`
	// Core (GET) says the storer counts itself among the Replication
	// peers closest to the key, by its own routing table: it should hold
	// every record of the set, where a peer a little farther may hold only
	// those that publishers sent it on their way (see dht.Node.publishAt).
	Core bool `cbor:"3,keyasint,omitempty"`
	// Shards (PUT and GET) is the shard count the storer advises for the
	// set: the largest its live records carry, doubled when that many
	// fill three quarters of the set; omitted when 1.
	Shards uint64 `cbor:"4,keyasint,omitempty"`
	// Forwarding (PUT marked Forward) lists the peers (binary peer IDs)
	// the storer is forwarding the record to, so that the sender's
	// withdrawal reaches them too; omitted when it forwards nothing.
	Forwarding [][]byte `cbor:"5,keyasint,omitempty"`
	// More (GET marked MoreShards) holds the live records of the set's
	// next shards at the storer: More[i] those of shard i+1, an empty
	// entry for a shard it holds none of. Shards past len(More) are not
	// answered (they would not fit, or the storer knows of none).
	More [][][]byte `cbor:"6,keyasint,omitempty"`
}

// Dec decodes messages: strict on structure, tolerant of fields a later
// version may add.
var Dec, _ = cbor.DecOptions{
	DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	IndefLength:      cbor.IndefLengthForbidden,
	TagsMd:           cbor.TagsForbidden,
	MaxArrayElements: 4096,
	MaxNestedLevels:  4,
}.DecMode()

// Enc encodes messages in CBOR's core deterministic encoding.
var Enc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()
