package manifest

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func TestParseCID(t *testing.T) {
	sha1 := plumbing.NewHash("f1ad324a897534d9d3dd95db7335c29c100d3203")
	mhSHA1, err := mh.Encode(sha1[:], mh.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	mhSHA256, err := mh.Sum([]byte("x"), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	mhShort, err := mh.Encode(sha1[:19], mh.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in string
		errText  string // "" for success
	}{
		{name: "git-raw sha1", in: "baf4bcfhrvuzevclvgtm5hxmv3nztlqu4cagteay"},
		{name: "upper-case base32", in: "BAF4BCFHRVUZEVCLVGTM5HXMV3NZTLQU4CAGTEAY"},
		{name: "dag-pb CIDv0", in: "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", errText: "not a git-raw commit CID: codec dag-pb"},
		{name: "raw codec", in: cid.NewCidV1(cid.Raw, mhSHA1).String(), errText: "codec raw"},
		{name: "git-raw sha2-256", in: cid.NewCidV1(cid.GitRaw, mhSHA256).String(), errText: "multihash sha2-256 of 32 bytes, want sha1 of 20 bytes"},
		{name: "git-raw short sha1", in: cid.NewCidV1(cid.GitRaw, mhShort).String(), errText: "multihash sha1 of 19 bytes"},
		{name: "garbage", in: "not a cid", errText: `not a git-raw commit CID: "not a cid"`},
		{name: "empty", in: "", errText: "not a git-raw commit CID"},
		{name: "hex hash", in: sha1.String(), errText: "not a git-raw commit CID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCID(tt.in)
			if tt.errText != "" {
				if !errors.Is(err, ErrNotCommitCID) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParseCID() error = %v, want ErrNotCommitCID containing %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h, err := HashOf(c); err != nil || h != sha1 {
				t.Errorf("HashOf(ParseCID()) = %s, %v; want %s", h, err, sha1)
			}
			if c.String() != "baf4bcfhrvuzevclvgtm5hxmv3nztlqu4cagteay" {
				t.Errorf("ParseCID().String() = %s", c)
			}
		})
	}
	if _, err := HashOf(cid.Undef); !errors.Is(err, ErrNotCommitCID) {
		t.Errorf("HashOf(cid.Undef) error = %v, want ErrNotCommitCID", err)
	}
}
