package manifest

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multicodec"
	mh "github.com/multiformats/go-multihash"
)

// ErrNotCommitCID means a CID is not a git-raw sha1 CID.
var ErrNotCommitCID = errors.New("manifest: not a git-raw commit CID")

// CIDOf returns the CID of the git object whose hash is h: CIDv1, codec
// git-raw, multihash sha1 with h as the digest. Its String form is the
// canonical one ("baf4bcf..." in base32).
func CIDOf(h plumbing.Hash) cid.Cid {
	m, _ := mh.Encode(h[:], mh.SHA1) // fails only for unknown codes
	return cid.NewCidV1(cid.GitRaw, m)
}

// HashOf is the inverse of CIDOf. The error wraps ErrNotCommitCID if c is
// undefined, its codec is not git-raw or its multihash is not a 20-byte
// sha1.
func HashOf(c cid.Cid) (plumbing.Hash, error) {
	if !c.Defined() {
		return plumbing.ZeroHash, fmt.Errorf("%w: undefined CID", ErrNotCommitCID)
	}
	if c.Type() != cid.GitRaw {
		return plumbing.ZeroHash, fmt.Errorf("%w: codec %s", ErrNotCommitCID, multicodec.Code(c.Type()))
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("%w: %v", ErrNotCommitCID, err)
	}
	var h plumbing.Hash
	if d.Code != mh.SHA1 || len(d.Digest) != len(h) {
		return plumbing.ZeroHash, fmt.Errorf("%w: multihash %s of %d bytes, want sha1 of %d bytes",
			ErrNotCommitCID, multicodec.Code(d.Code), len(d.Digest), len(h))
	}
	copy(h[:], d.Digest)
	return h, nil
}

// ParseCID decodes a CID string (any multibase) and checks it as HashOf
// does. Every error wraps ErrNotCommitCID.
func ParseCID(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %q: %v", ErrNotCommitCID, s, err)
	}
	if _, err := HashOf(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// CheckGitURL rejects what cannot be a git URL or path, whatever the
// transport: control characters, invalid UTF-8 and a leading '-' (which
// git would take for an option).
func CheckGitURL(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if strings.HasPrefix(s, "-") {
		return errors.New("starts with '-'")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("control character %q", r)
		}
	}
	return nil
}

// CheckTag accepts the names git accepts for a tag or branch.
func CheckTag(tag string) error {
	if !utf8.ValidString(tag) || plumbing.ReferenceName("refs/tags/"+tag).Validate() != nil {
		return fmt.Errorf("tag %q: not a valid git tag or branch name", tag)
	}
	return nil
}
