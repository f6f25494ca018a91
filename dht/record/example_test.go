package record_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/cellnode/cellnode/dht/record"
)

// key returns a fixed key, so that the examples' output does not change.
func key(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

var issued = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// A node signs the record of one instance of a cell: where to reach it, for
// at most 60 s.
func ExampleSign() {
	node := key(1)
	r, err := record.Sign(node, record.Record{
		Name:      "acme/exchange",
		PublicKey: node.Public().(ed25519.PublicKey),
		Endpoints: []string{"192.0.2.7:9000"},
		Seq:       1,
		Issued:    issued,
		Expires:   issued.Add(60 * time.Second),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Name, r.Endpoints, len(r.Bytes()) <= record.MaxRecordSize)
	fmt.Println(record.Key(r.Name))
	// Output:
	// acme/exchange [192.0.2.7:9000] true
	// /cell/acme/exchange
}

// A finder verifies the bytes it received for the name it asked for, at its
// own clock: signature, canonical encoding, name and lifetime.
func ExampleVerify() {
	node := key(1)
	r, _ := record.Sign(node, record.Record{
		Name:      "acme/exchange",
		PublicKey: node.Public().(ed25519.PublicKey),
		Endpoints: []string{"192.0.2.7:9000"},
		Seq:       1,
		Issued:    issued,
		Expires:   issued.Add(60 * time.Second),
	})
	raw := r.Bytes()

	got, err := record.Verify(raw, "acme/exchange", issued.Add(10*time.Second))
	fmt.Println(got.Endpoints, err)

	_, err = record.Verify(raw, "acme/other", issued.Add(10*time.Second))
	fmt.Println(record.Reason(err))

	_, err = record.Verify(raw, "acme/exchange", issued.Add(2*time.Minute))
	fmt.Println(errors.Is(err, record.ErrExpired))

	tampered := bytes.Clone(raw)
	tampered[len(tampered)-1] ^= 1
	_, err = record.Verify(tampered, "acme/exchange", issued.Add(10*time.Second))
	fmt.Println(record.Reason(err))
	// Output:
	// [192.0.2.7:9000] <nil>
	// wrong_name
	// true
	// bad_signature
}

// A publisher, whose key the cell's manifest lists, delegates the name to a
// node's key; the node's records then carry the delegation, and a finder
// that trusts the publisher accepts them.
func ExampleSignDelegation() {
	publisher, node := key(2), key(1)
	nodePub := node.Public().(ed25519.PublicKey)
	d, err := record.SignDelegation(publisher, record.Delegation{
		Name:     "acme/exchange",
		Node:     nodePub,
		Issued:   issued,
		NotAfter: issued.Add(24 * time.Hour),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	r, _ := record.Sign(node, record.Record{
		Name:       "acme/exchange",
		PublicKey:  nodePub,
		Endpoints:  []string{"192.0.2.7:9000"},
		Seq:        1,
		Issued:     issued,
		Expires:    issued.Add(60 * time.Second),
		Delegation: d,
	})

	got, err := record.Verify(r.Bytes(), "acme/exchange", issued.Add(10*time.Second))
	fmt.Println(err, bytes.Equal(got.Publisher(), publisher.Public().(ed25519.PublicKey)))

	// The delegation alone, as a publisher hands it to the node.
	_, err = record.VerifyDelegation(d.Bytes(), "acme/exchange", nodePub, issued.Add(time.Hour))
	fmt.Println(err)
	_, err = record.VerifyDelegation(d.Bytes(), "acme/other", nodePub, issued.Add(time.Hour))
	fmt.Println(record.DelegationReason(err))
	// Output:
	// <nil> true
	// <nil>
	// wrong_name
}
