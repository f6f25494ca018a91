package resolve

import (
	"context"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/cellnode/cellnode/manifest"
	"github.com/cellnode/cellnode/node"
	"github.com/ipfs/go-cid"
)

// Filter keeps the instances whose manifest is compatible: a schema
// fingerprint, a semantic version range, or both. The zero Filter keeps
// everything.
type Filter struct {
	fingerprint string              // normalised hex, "" for any
	version     *semver.Constraints // nil for any
	raw         string
}

// NewFilter returns the filter for a fingerprint (up to 16 hex digits)
// and a version constraint (1.2.3, or a range such as '>=1.2, <2'); ""
// means any.
func NewFilter(fingerprint, version string) (Filter, error) {
	f := Filter{raw: version}
	if fingerprint != "" {
		fp, ok := normFingerprint(fingerprint)
		if !ok {
			return f, fmt.Errorf("--fingerprint %q: want up to 16 hex digits, e.g. 9f2c44d1a07be311", fingerprint)
		}
		f.fingerprint = fp
	}
	if version != "" {
		c, err := semver.NewConstraint(version)
		if err != nil {
			return f, fmt.Errorf("--version %q: %v (want 1.2.3 or a range such as '>=1.2, <2')", version, err)
		}
		f.version = c
	}
	return f, nil
}

// Empty reports whether f keeps everything.
func (f Filter) Empty() bool { return f.fingerprint == "" && f.version == nil }

// normFingerprint lower-cases fp, drops a 0x prefix and leading zeros.
func normFingerprint(fp string) (string, bool) {
	fp = strings.TrimPrefix(strings.ToLower(fp), "0x")
	if fp == "" || len(fp) > 16 || strings.Trim(fp, "0123456789abcdef") != "" {
		return "", false
	}
	if fp = strings.TrimLeft(fp, "0"); fp == "" {
		fp = "0"
	}
	return fp, true
}

// Match reports whether m passes f.
func (f Filter) Match(m *manifest.Manifest) bool {
	if f.fingerprint != "" {
		fp, ok := normFingerprint(m.Fingerprint)
		if !ok || fp != f.fingerprint {
			return false
		}
	}
	if f.version != nil {
		v, err := semver.NewVersion(m.Version)
		if err != nil || !f.version.Check(v) {
			return false
		}
	}
	return true
}

// Apply fetches the manifest of each distinct commit in res once and keeps
// the instances whose manifest matches. A commit whose manifest cannot be
// fetched is reported to the session's warnings and its instances are left
// out.
func (f Filter) Apply(ctx context.Context, s *Session, res *node.FindResult) (*node.FindResult, error) {
	verdict := map[string]bool{}
	kept := res.Instances[:0:0]
	for _, in := range res.Instances {
		if in.Manifest == "" {
			continue
		}
		ok, seen := verdict[in.Manifest]
		if !seen {
			c, err := cid.Decode(in.Manifest)
			if err == nil {
				var info *node.ManifestInfo
				if info, err = s.ManifestInfo(ctx, c, node.HintsFor(res, c)); err == nil {
					ok = f.Match(info.Manifest)
				}
			}
			if err != nil {
				fmt.Fprintf(s.warn, "cellnode: manifest %s: %v\n", in.Manifest, err)
			}
			verdict[in.Manifest] = ok
		}
		if ok {
			kept = append(kept, in)
		}
	}
	out := *res
	out.Instances = kept
	return &out, nil
}
