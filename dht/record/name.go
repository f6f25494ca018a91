package record

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidName is returned (wrapped) by ParseName for a malformed cell name.
var ErrInvalidName = errors.New("dht: invalid cell name")

// MaxNamePart is the longest org or name part of a cell name, in bytes.
const MaxNamePart = 64

// KeyPrefix is the DHT key namespace of cell names.
const KeyPrefix = "/cell/"

// ParseName checks that s is a cell name "org/name": two parts separated by a
// single '/', each 1 to 64 characters of lower-case ASCII letters, digits,
// '-' and '.'. It returns s unchanged on success. The error wraps
// ErrInvalidName and says what a valid name looks like.
func ParseName(s string) (string, error) {
	org, name, ok := strings.Cut(s, "/")
	if !ok {
		return "", fmt.Errorf("%w %q: want org/name, e.g. acme/exchange", ErrInvalidName, s)
	}
	for _, part := range []string{org, name} {
		if err := checkPart(part); err != nil {
			return "", fmt.Errorf("%w %q: %s (want org/name: lower-case letters, digits, '-' and '.', 1-64 each, e.g. acme/exchange)", ErrInvalidName, s, err)
		}
	}
	return s, nil
}

func checkPart(p string) error {
	if p == "" {
		return errors.New("empty part")
	}
	if len(p) > MaxNamePart {
		return fmt.Errorf("part %d characters long", len(p))
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// Key returns the DHT key under which the instances of the cell name live.
// The name must already be valid.
func Key(name string) string { return KeyPrefix + name }
