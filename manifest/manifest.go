// Package manifest reads and validates a cell's manifest, Cell.json, and
// names the git commit that holds it (CIDOf, HashOf, ParseCID), with the
// rules for cell names, publisher keys, git URLs and tags that the other
// manifest packages share. It does no networking and opens no repository:
// moving git objects is package manifest/gitobj, Cell.toml and Cell.lock
// are package manifest/project.
//
// A cell is a service named "org/name". Its manifest lives at the root of
// the cell's directory in a git repository and is addressed by the CID of
// the commit that holds it: a CIDv1 with codec git-raw (0x78) whose
// multihash is sha1 (0x11) over the 20-byte git commit hash, written in the
// default base32 form (see CIDOf).
package manifest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"unicode/utf8"
)

// FileName is the name of the manifest file in a cell's directory.
const FileName = "Cell.json"

// MaxSize is the largest manifest, in bytes, that Parse and Load accept.
const MaxSize = 64 << 10

// MaxPublishers is the most publisher keys a manifest may list: every key
// costs each pinned find a lookup of its own.
const MaxPublishers = 64

// Errors returned by this package; match them with errors.Is.
var (
	// ErrNotFound means the directory has no Cell.json. Errors wrapping it
	// also match fs.ErrNotExist.
	ErrNotFound = errors.New("manifest: no Cell.json")
	// ErrInvalid means Cell.json is not a valid manifest.
	ErrInvalid = errors.New("manifest: invalid Cell.json")
)

// Manifest is the content of Cell.json.
type Manifest struct {
	// Name is the cell's name, "org/name": two parts of 1 to 64
	// characters from [a-z0-9.-] each, neither "." nor "..". Required.
	Name string `json:"name"`
	// Version is the cell's version. Optional and free-form for now.
	Version string `json:"version"`
	// Fingerprint, if set, is a 64-bit value in hex: 1 to 16 hex digits
	// with an optional "0x" prefix, kept as written.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Publishers are the ed25519 public keys (32 bytes each) allowed to
	// publish the cell, each in hex (64 digits) or standard padded base64
	// (44 characters), kept as written; at most MaxPublishers.
	Publishers []string `json:"publishers,omitempty"`
	// Build, if set, says how to build the cell from its directory.
	Build *Build `json:"build,omitempty"`
}

// Build says how to build and start a cell. Paths are relative to the
// cell's directory and must stay inside it (filepath.IsLocal).
type Build struct {
	// Command is the build command and its arguments; Command[0] must
	// not be empty. Required.
	Command []string `json:"command"`
	// Dir is the directory to run Command in.
	Dir string `json:"dir,omitempty"`
	// Binary is the executable that Command produces.
	Binary string `json:"binary,omitempty"`
	// Socket is the path of the socket the cell serves on.
	Socket string `json:"socket,omitempty"`
}

// Load reads and parses dir/Cell.json. If the file does not exist the error
// wraps ErrNotFound (and fs.ErrNotExist) and names dir; parse errors wrap
// ErrInvalid and name the file.
func Load(dir string) (*Manifest, error) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	path := filepath.Join(dir, FileName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, &notFoundError{dir: dir, err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return m, nil
}

// notFoundError is Load's error for a missing Cell.json.
type notFoundError struct {
	dir string
	err error // from os.Open, matches fs.ErrNotExist
}

func (e *notFoundError) Error() string {
	return fmt.Sprintf("%v in %s (create one, or pass --name)", ErrNotFound, e.dir)
}

func (e *notFoundError) Unwrap() []error { return []error{ErrNotFound, e.err} }

// Parse parses and validates a manifest. It is strict: input larger than
// MaxSize, invalid UTF-8, anything but one JSON object, unknown or
// duplicate fields (matched case-sensitively), values of the wrong type and
// trailing data are rejected. Every error wraps ErrInvalid and names the
// offending field and what is wrong with it.
func Parse(b []byte) (*Manifest, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	if err := checkStructure(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %s: got %s, want %s", ErrInvalid, te.Field, te.Value, kindName(te.Type))
		}
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(m.Publishers) == 0 {
		m.Publishers = nil // "publishers": [] is the same as none
	}
	return &m, nil
}

// checkStructure checks that b is exactly one JSON object with no duplicate
// keys and, in the objects this package decodes, no keys other than the
// exact field names (encoding/json would match them case-insensitively and
// let the last duplicate win).
func checkStructure(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil {
		return jsonError(err)
	} else if tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	if err := checkObject(dec, "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// maxDepth bounds nesting; valid manifests nest three levels deep.
const maxDepth = 8

// checkObject checks the rest of an object whose '{' has been read; path
// names it ("" for the top level).
func checkObject(dec *json.Decoder, path string, depth int) error {
	var known []string
	switch path {
	case "":
		known = []string{"name", "version", "fingerprint", "publishers", "build"}
	case "build":
		known = []string{"command", "dir", "binary", "socket"}
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonError(err)
		}
		key := tok.(string) // object keys are always strings
		field := key
		if path != "" {
			field = path + "." + key
		}
		if seen[key] {
			return fmt.Errorf("duplicate field %q", field)
		}
		seen[key] = true
		if known != nil && !contains(known, key) {
			return fmt.Errorf("unknown field %q", field)
		}
		if err := checkValue(dec, field, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return jsonError(err)
}

// checkValue checks the next JSON value; path names it.
func checkValue(dec *json.Decoder, path string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: nested too deeply", path)
	}
	tok, err := dec.Token()
	if err != nil {
		return jsonError(err)
	}
	switch tok {
	case json.Delim('{'):
		return checkObject(dec, path, depth)
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec, path, depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return jsonError(err)
	}
	return nil
}

func jsonError(err error) error {
	var se *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return errors.New("not JSON: unexpected end of input")
	case errors.As(err, &se):
		return fmt.Errorf("not JSON: %v (at byte %d)", se, se.Offset)
	}
	return fmt.Errorf("not JSON: %w", err)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// kindName describes a Go type as the JSON type it decodes from.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "array of " + kindName(t.Elem()) + "s"
	case reflect.Struct, reflect.Pointer, reflect.Map:
		return "object"
	}
	return t.String()
}

// NameRule describes a valid cell name, for error messages.
const NameRule = "(want org/name, lower-case letters, digits, '-' and '.')"

// validate checks the field values of a decoded manifest.
func (m *Manifest) validate() error {
	if m.Name == "" {
		return fmt.Errorf("name: missing %s", NameRule)
	}
	if err := CheckName(m.Name); err != nil {
		return fmt.Errorf("name %q: %w %s", m.Name, err, NameRule)
	}
	if m.Fingerprint != "" {
		if err := CheckFingerprint(m.Fingerprint); err != nil {
			return fmt.Errorf("fingerprint %q: %w (want up to 16 hex digits, optionally prefixed by 0x)", m.Fingerprint, err)
		}
	}
	if len(m.Publishers) > MaxPublishers {
		return fmt.Errorf("publishers: %d keys, at most %d", len(m.Publishers), MaxPublishers)
	}
	for i, p := range m.Publishers {
		if err := CheckPublicKey(p); err != nil {
			return fmt.Errorf("publishers[%d] %q: %w (want a 32-byte ed25519 public key in hex or standard base64)", i, p, err)
		}
	}
	if b := m.Build; b != nil {
		switch {
		case len(b.Command) == 0:
			return errors.New("build.command: missing (want the command and its arguments)")
		case b.Command[0] == "":
			return errors.New("build.command[0]: empty (want the program to run)")
		}
		for _, f := range []struct{ name, path string }{{"dir", b.Dir}, {"binary", b.Binary}, {"socket", b.Socket}} {
			if f.path != "" && !filepath.IsLocal(f.path) {
				return fmt.Errorf("build.%s %q: not a relative path inside the cell directory", f.name, f.path)
			}
		}
	}
	return nil
}

// CheckName checks a cell name ("org/name") against NameRule.
func CheckName(name string) error {
	org, rest, ok := strings.Cut(name, "/")
	if !ok {
		return errors.New("missing '/'")
	}
	if strings.Contains(rest, "/") {
		return errors.New("more than one '/'")
	}
	for _, part := range []struct{ what, s string }{{"org", org}, {"name", rest}} {
		switch {
		case part.s == "":
			return fmt.Errorf("empty %s", part.what)
		case len(part.s) > 64:
			return fmt.Errorf("%s longer than 64 characters", part.what)
		case part.s == "." || part.s == "..":
			return fmt.Errorf("%s must not be %q", part.what, part.s)
		}
		for _, r := range part.s {
			if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '.') {
				return fmt.Errorf("invalid character %q in %s", r, part.what)
			}
		}
	}
	return nil
}

// CheckFingerprint accepts up to 16 hex digits, optionally prefixed by 0x.
func CheckFingerprint(s string) error {
	digits := strings.TrimPrefix(s, "0x")
	switch {
	case digits == "":
		return errors.New("no hex digits")
	case len(digits) > 16:
		return errors.New("more than 16 hex digits")
	}
	if !isHex(digits) {
		return errors.New("not hex")
	}
	return nil
}

// isHex reports whether s is all hex digits, in either case.
func isHex(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

// CheckPublicKey accepts 64 hex digits or canonical padded standard base64
// of 32 bytes.
func CheckPublicKey(s string) error {
	if len(s) == 2*32 {
		if !isHex(s) {
			return errors.New("not hex")
		}
		return nil
	}
	k, err := base64.StdEncoding.Strict().DecodeString(s)
	switch {
	case err != nil || base64.StdEncoding.EncodeToString(k) != s:
		return errors.New("neither hex nor base64")
	case len(k) != 32:
		return fmt.Errorf("%d bytes", len(k))
	}
	return nil
}
