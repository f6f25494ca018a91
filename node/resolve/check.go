package resolve

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"

	"github.com/cellnode/cellnode/dht/record"

	"github.com/cellnode/cellnode/manifest"
)

// CheckManifest checks the manifest of a commit chosen by cell name: it
// must name the cell and, when publishers are pinned, list one of them.
func CheckManifest(m *manifest.Manifest, name string, pins []ed25519.PublicKey) error {
	if m.Name != name {
		return fmt.Errorf("its Cell.json names %s, not %s", m.Name, name)
	}
	if len(pins) == 0 {
		return nil
	}
	for _, p := range m.Publishers {
		if k, err := record.ParsePublicKey(p); err == nil && slices.ContainsFunc(pins, func(q ed25519.PublicKey) bool { return q.Equal(k) }) {
			return nil
		}
	}
	return errors.New("its Cell.json lists none of the pinned publishers")
}
