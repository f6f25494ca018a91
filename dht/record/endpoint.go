package record

import (
	"errors"
	"fmt"
	"strings"
)

// CheckEndpoint reports whether s is an endpoint a record may carry (see
// docs/records.md, "Endpoints"), at most MaxEndpointLen bytes:
//
//   - "unix:" followed by an absolute socket path: "/" and at least one
//     more byte, all printable ASCII other than space (0x21-0x7e);
//   - otherwise HOST ":" PORT, split at the last ':'. HOST is a name or an
//     IPv4 address, 1 or more of A-Z a-z 0-9 - . _, or "[" 1 or more of
//     0-9 a-f A-F : . "]" (an IPv6 address); PORT is decimal, 1 to 65535,
//     without leading zeros.
//
// A wildcard such as ":9000" is not an endpoint: the announcer expands it to
// this machine's addresses first. The error wraps ErrMalformed.
func CheckEndpoint(s string) error {
	if err := checkEndpoint(s); err != nil {
		return fmt.Errorf("%w: endpoint %q: %v", ErrMalformed, s, err)
	}
	return nil
}

func checkEndpoint(s string) error {
	if len(s) == 0 || len(s) > MaxEndpointLen {
		return fmt.Errorf("%d bytes (1-%d allowed)", len(s), MaxEndpointLen)
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if len(path) < 2 || path[0] != '/' {
			return errors.New("want unix:/absolute/path")
		}
		for i := 0; i < len(path); i++ {
			if path[i] < 0x21 || path[i] > 0x7e {
				return fmt.Errorf("byte %#x in the socket path (printable ASCII, no space)", path[i])
			}
		}
		return nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return errors.New("want host:port or unix:/path")
	}
	host, port := s[:i], s[i+1:]
	if err := checkPort(port); err != nil {
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	allowed := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
	}
	if host[0] == '[' {
		if len(host) < 3 || host[len(host)-1] != ']' {
			return errors.New("want [ipv6]:port")
		}
		host = host[1 : len(host)-1]
		allowed = func(c byte) bool {
			return c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c >= '0' && c <= '9' || c == ':' || c == '.'
		}
	}
	for i := 0; i < len(host); i++ {
		if !allowed(host[i]) {
			return fmt.Errorf("byte %#x in the host", host[i])
		}
	}
	return nil
}

func checkPort(p string) error {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return fmt.Errorf("port %q: want 1 to 65535, no leading zero", p)
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return fmt.Errorf("port %q: want 1 to 65535, no leading zero", p)
		}
		n = n*10 + int(p[i]-'0')
	}
	if n > 65535 {
		return fmt.Errorf("port %d over 65535", n)
	}
	return nil
}

// CheckRegion reports whether s may be a record's region: empty (no region)
// or 1 to MaxRegionLen bytes of printable ASCII, space included (0x20-0x7e),
// so that a region printed in a terminal cannot carry control sequences.
// The error wraps ErrMalformed.
func CheckRegion(s string) error {
	if len(s) > MaxRegionLen {
		return fmt.Errorf("%w: region of %d bytes, limit %d", ErrMalformed, len(s), MaxRegionLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("%w: region: byte %#x (printable ASCII only)", ErrMalformed, s[i])
		}
	}
	return nil
}
