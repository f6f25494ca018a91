// Package record is the byte format of the cell namespace: the signed
// instance record (Sign, Decode, Verify), the publisher's delegation of a
// cell name to a node key (SignDelegation, VerifyDelegation), and the rules
// for cell names, endpoints and regions. It does no networking: the dht
// package stores and finds these bytes, and anything else (a browser, a
// test, internal/recordjs) can check them with this package alone.
//
// Encoding is core deterministic CBOR, signatures are plain Ed25519 over a
// domain-separated body, with strict key and signature checks. A record
// lives at most 60 s. See docs/records.md for the format and
// docs/vectors/records.json for the conformance vectors.
package record
