package project

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cellnode/cellnode/manifest"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// DepsFile is the name of the file, next to Cell.json, in which a cell
// declares the cells it depends on.
const DepsFile = "Cell.toml"

// maxTOMLSize is the largest Cell.toml or Cell.lock, in bytes, that this
// package reads.
const maxTOMLSize = 1 << 20

// Errors about Cell.toml; match them with errors.Is.
var (
	// ErrInvalidDeps means Cell.toml is not valid, or an edit would make
	// it invalid.
	ErrInvalidDeps = errors.New("manifest: invalid Cell.toml")
	// ErrDepsNotEditable means AddDep cannot rewrite a dependency as one
	// line because of how the file writes it (a [cell.name] table, dotted
	// keys, or a cell table that is not a [cell] section); the user has
	// to edit the file.
	ErrDepsNotEditable = errors.New("manifest: Cell.toml cannot be edited automatically")
)

// Deps is the content of Cell.toml.
type Deps struct {
	// Package describes the cell itself.
	Package Package `toml:"package"`
	// Cells are the dependencies by local name (the key in the [cell]
	// table), which names the dependency's socket and generated files.
	// ParseDeps never leaves it nil.
	Cells map[string]Dep `toml:"cell"`
}

// Package is the [package] table of Cell.toml.
type Package struct {
	// Name is the cell's own name, org/name as in Cell.json; "" if not
	// given.
	Name string `toml:"name"`
	// Version is free-form; "" if not given.
	Version string `toml:"version"`
}

// Dep is one dependency in the [cell] table of Cell.toml.
type Dep struct {
	// Git is the URL of the git repository holding the cell: https://,
	// ssh:// or scp-like user@host:path, file://, or a local path.
	// Required.
	Git string `toml:"git"`
	// Tag is the tag, or else branch, to resolve; "" means the remote's
	// HEAD.
	Tag string `toml:"tag"`
	// Cell is the dependency's full name, org/name; "" means the name in
	// the Cell.json of the resolved commit.
	Cell string `toml:"cell"`
	// MaxLatencyMS is the largest acceptable round-trip time to an
	// instance, in milliseconds; 0 means no limit.
	MaxLatencyMS int `toml:"max_latency_ms"`
	// AutoSpawn says to start an instance locally when none is reachable.
	AutoSpawn bool `toml:"auto_spawn"`
}

// ParseDeps parses and validates Cell.toml. It is strict: input larger
// than 1 MiB, TOML syntax errors, duplicate keys, values of the wrong type
// and unknown fields anywhere (keys match case-sensitively) are rejected,
// and so are dependency keys not matching [a-z0-9][a-z0-9._-]{0,63}, a
// missing git URL or one with control characters, a tag that is not a
// valid git ref name, names that are not org/name (lower-case letters,
// digits, '-' and '.', 1 to 64 of them each part), and a negative
// max_latency_ms. Every error wraps ErrInvalidDeps and, when it concerns
// part of the document, starts with its position: "Cell.toml:LINE:COL: ".
func ParseDeps(b []byte) (*Deps, error) {
	return parseDeps(b, DepsFile)
}

// parseDeps is ParseDeps with file naming the input in positions.
func parseDeps(b []byte, file string) (*Deps, error) {
	if len(b) > maxTOMLSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidDeps, maxTOMLSize)
	}
	var d Deps
	doc, err := decodeTOML(b, file, depsSchema(), &d)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDeps, err)
	}
	if d.Package.Name != "" {
		if err := manifest.CheckName(d.Package.Name); err != nil {
			return nil, fmt.Errorf("%w: %s: package.name %q: %w %s", ErrInvalidDeps,
				doc.at("package", "name"), d.Package.Name, err, manifest.NameRule)
		}
	}
	keys := make([]string, 0, len(d.Cells))
	for k := range d.Cells {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return doc.offset("cell", keys[i]) < doc.offset("cell", keys[j]) })
	for _, k := range keys {
		if field, err := d.Cells[k].validate(); err != nil {
			return nil, fmt.Errorf("%w: %s: %s: %w", ErrInvalidDeps, doc.at("cell", k, field),
				tomlPath([]string{"cell", k}), err)
		}
	}
	if d.Cells == nil {
		d.Cells = make(map[string]Dep)
	}
	return &d, nil
}

// LoadDeps reads and parses dir/Cell.toml. If the file does not exist the
// error wraps fs.ErrNotExist and names the file; parse errors wrap
// ErrInvalidDeps and give positions in the file's path.
func LoadDeps(dir string) (*Deps, error) {
	b, path, err := readTOML(dir, DepsFile)
	if err != nil {
		return nil, err
	}
	if len(b) > maxTOMLSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrInvalidDeps, path, maxTOMLSize)
	}
	return parseDeps(b, path)
}

// readTOML reads dir/name, up to one byte more than maxTOMLSize, and
// returns its content and absolute path.
func readTOML(dir, name string) ([]byte, string, error) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, path, fmt.Errorf("manifest: %w", err) // *PathError names path
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTOMLSize+1))
	if err != nil {
		return nil, path, fmt.Errorf("manifest: read %s: %w", path, err)
	}
	return b, path, nil
}

// validate checks a dependency's fields; the field name returned with an
// error is "" for the dependency as a whole.
func (d Dep) validate() (field string, err error) {
	if d.Git == "" {
		return "", errors.New("missing git (want the URL of the cell's git repository)")
	}
	if err := manifest.CheckGitURL(d.Git); err != nil {
		return "git", fmt.Errorf("git %q: %w", d.Git, err)
	}
	if d.Tag != "" {
		if err := manifest.CheckTag(d.Tag); err != nil {
			return "tag", err
		}
	}
	if d.Cell != "" {
		if err := manifest.CheckName(d.Cell); err != nil {
			return "cell", fmt.Errorf("cell %q: %w %s", d.Cell, err, manifest.NameRule)
		}
	}
	if d.MaxLatencyMS < 0 {
		return "max_latency_ms", fmt.Errorf("max_latency_ms %d: negative (want milliseconds, 0 for no limit)", d.MaxLatencyMS)
	}
	return "", nil
}

// depKeyRule describes the valid dependency keys.
const depKeyRule = "[a-z0-9][a-z0-9._-]{0,63}"

// checkDepKey checks a dependency key against depKeyRule.
func checkDepKey(k string) error {
	if k == "" || len(k) > 64 {
		return fmt.Errorf("dependency key %q: want 1 to 64 characters matching %s", k, depKeyRule)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("dependency key %q: invalid character %q at %d (want %s)", k, rune(c), i, depKeyRule)
		}
	}
	return nil
}

// AddDep returns Cell.toml b with dependency key set to d, written as one
// inline-table line with only the non-zero fields, in the order git, tag,
// cell, max_latency_ms, auto_spawn:
//
//	key = { git = "https://example.com/x.git", tag = "v1.0.0" }
//
// Every other byte of b is kept. An existing "key = ..." line in the
// [cell] section is replaced in place (its indentation and trailing
// comment are kept); a new dependency goes after the last key of the
// [cell] section, or right after its header if it has none; without a
// [cell] section, one is appended at the end of the file.
//
// b must parse with ParseDeps (an empty b is an empty file), and key and d
// must be valid; errors about either wrap ErrInvalidDeps. If the
// dependency is written as a [cell.key] table or with dotted keys, or the
// cell table is not a [cell] section, the error wraps ErrDepsNotEditable.
// The result always parses, to what b parses to with key set to d.
func AddDep(b []byte, key string, d Dep) ([]byte, error) {
	before, err := ParseDeps(b)
	if err != nil {
		return nil, err
	}
	if err := checkDepKey(key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDeps, err)
	}
	if _, err := d.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidDeps, tomlPath([]string{"cell", key}), err)
	}
	nl := "\n"
	if bytes.Contains(b, []byte("\r\n")) {
		nl = "\r\n"
	}
	line := formatDep(key, d)

	var p unstable.Parser
	p.Reset(b)
	var table []string
	headerEnd, lastEnd := -1, -1 // ends of the [cell] header, of its last key
	replaceFrom, replaceTo := -1, -1
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(n)
			if len(table) >= 2 && table[0] == "cell" && table[1] == key {
				return nil, fmt.Errorf("%w: dependency %q is written as a [%s] table; edit it by hand",
					ErrDepsNotEditable, key, tomlPath(table))
			}
			if len(table) == 1 && table[0] == "cell" {
				headerEnd = lineEnd(b, int(lastKey(n).Raw.Offset))
			}
		case unstable.KeyValue:
			k := keyParts(n)
			switch {
			case table == nil && k[0] == "cell":
				return nil, fmt.Errorf("%w: the cell table is written as %q rather than a [cell] section; edit it by hand",
					ErrDepsNotEditable, tomlPath(k))
			case len(table) == 1 && table[0] == "cell":
				end := int(n.Raw.Offset + n.Raw.Length)
				if k[0] == key {
					if len(k) > 1 {
						return nil, fmt.Errorf("%w: dependency %q is written with dotted keys (%s); edit it by hand",
							ErrDepsNotEditable, key, tomlPath(k))
					}
					replaceFrom, replaceTo = int(n.Raw.Offset), end
				}
				lastEnd = end
			}
		}
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDeps, err) // ParseDeps accepted it; not expected
	}

	var out []byte
	switch {
	case replaceFrom >= 0:
		out = splice(b, replaceFrom, replaceTo, line)
	case lastEnd >= 0:
		out = insertLine(b, lineEnd(b, lastEnd), line, nl)
	case headerEnd >= 0:
		out = insertLine(b, headerEnd, line, nl)
	default:
		out = append([]byte(nil), b...)
		if len(out) > 0 {
			if out[len(out)-1] != '\n' {
				out = append(out, nl...)
			}
			if !bytes.HasSuffix(out, []byte(nl+nl)) {
				out = append(out, nl...)
			}
		}
		out = append(out, "[cell]"+nl+line+nl...)
	}

	after, err := ParseDeps(out)
	if err != nil {
		return nil, fmt.Errorf("%w: the edited file does not parse: %w", ErrDepsNotEditable, err)
	}
	before.Cells[key] = d
	if !reflect.DeepEqual(before, after) {
		return nil, fmt.Errorf("%w: the edited file does not parse to the intended dependencies", ErrDepsNotEditable)
	}
	return out, nil
}

// formatDep writes dependency d as one inline-table line, without a line
// ending.
func formatDep(key string, d Dep) string {
	var fields []string
	fields = append(fields, "git = "+tomlString(d.Git))
	if d.Tag != "" {
		fields = append(fields, "tag = "+tomlString(d.Tag))
	}
	if d.Cell != "" {
		fields = append(fields, "cell = "+tomlString(d.Cell))
	}
	if d.MaxLatencyMS != 0 {
		fields = append(fields, "max_latency_ms = "+strconv.Itoa(d.MaxLatencyMS))
	}
	if d.AutoSpawn {
		fields = append(fields, "auto_spawn = true")
	}
	return tomlKey(key) + " = { " + strings.Join(fields, ", ") + " }"
}

// splice returns b with b[from:to] replaced by s.
func splice(b []byte, from, to int, s string) []byte {
	out := make([]byte, 0, len(b)-(to-from)+len(s))
	out = append(out, b[:from]...)
	out = append(out, s...)
	return append(out, b[to:]...)
}

// insertLine inserts line and a line ending at offset at, which is the
// start of a line or the end of b (which may lack a final line ending).
func insertLine(b []byte, at int, line, nl string) []byte {
	if at == len(b) && len(b) > 0 && b[len(b)-1] != '\n' {
		line = nl + line
	}
	return splice(b, at, at, line+nl)
}

// lineEnd returns the offset just past the line ending that follows off,
// or len(b) if none does.
func lineEnd(b []byte, off int) int {
	if i := bytes.IndexByte(b[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(b)
}

// tomlKey writes k as a TOML key: bare if it can be, else quoted.
func tomlKey(k string) string {
	bare := k != ""
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			bare = false
			break
		}
	}
	if bare {
		return k
	}
	return tomlString(k)
}

// tomlPath writes a key path as TOML would, e.g. cell."a.b".git.
func tomlPath(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = tomlKey(p)
	}
	return strings.Join(parts, ".")
}

// tomlString writes s, which must be valid UTF-8, as a TOML basic string.
func tomlString(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			sb.WriteString(`\"`)
		case '\\':
			sb.WriteString(`\\`)
		case '\b':
			sb.WriteString(`\b`)
		case '\t':
			sb.WriteString(`\t`)
		case '\n':
			sb.WriteString(`\n`)
		case '\f':
			sb.WriteString(`\f`)
		case '\r':
			sb.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&sb, `\u%04X`, r)
			} else {
				sb.WriteRune(r)
			}
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// tomlField describes what a key of a TOML document may hold.
type tomlField struct {
	// kind is what the value must be: String, Integer, Float (an integer
	// is accepted too), Bool, DateTime (with an offset), Array (of elem),
	// Table or ArrayTable.
	kind unstable.Kind
	// elem is the kind of the elements of an Array.
	elem unstable.Kind
	// fields are the keys of a Table, or of each element of an
	// ArrayTable.
	fields map[string]*tomlField
	// anyKey, for a Table without fields, is the schema of every value;
	// checkKey checks the keys.
	anyKey   *tomlField
	checkKey func(string) error
}

// depsSchema returns the schema of Cell.toml.
func depsSchema() *tomlField {
	str := &tomlField{kind: unstable.String}
	dep := &tomlField{kind: unstable.Table, fields: map[string]*tomlField{
		"git": str, "tag": str, "cell": str,
		"max_latency_ms": {kind: unstable.Integer},
		"auto_spawn":     {kind: unstable.Bool},
	}}
	return &tomlField{kind: unstable.Table, fields: map[string]*tomlField{
		"package": {kind: unstable.Table, fields: map[string]*tomlField{"name": str, "version": str}},
		"cell":    {kind: unstable.Table, anyKey: dep, checkKey: checkDepKey},
	}}
}

// tomlDoc records where the keys of a checked document are.
type tomlDoc struct {
	file string
	data []byte
	// first is one more than the offset of the first key naming each
	// path (joined with NUL); elems the offsets of the elements of each
	// array of tables.
	first map[string]int
	elems map[string][]int
}

// offset returns where path is first named, or -1.
func (d *tomlDoc) offset(path ...string) int {
	return d.first[strings.Join(path, "\x00")] - 1
}

// at returns "file:LINE:COL" for where path is first named, or the longest
// prefix of path that is named, or just "file".
func (d *tomlDoc) at(path ...string) string {
	for n := len(path); n > 0; n-- {
		if off := d.offset(path[:n]...); off >= 0 {
			return d.position(off)
		}
	}
	return d.file
}

// position returns "file:LINE:COL" for a byte offset; COL counts
// characters.
func (d *tomlDoc) position(off int) string {
	line := 1 + bytes.Count(d.data[:off], []byte("\n"))
	start := bytes.LastIndexByte(d.data[:off], '\n') + 1
	return fmt.Sprintf("%s:%d:%d", d.file, line, 1+utf8.RuneCount(d.data[start:off]))
}

// errSyntax means the document does not parse; the decoder says where.
var errSyntax = errors.New("syntax error")

// decodeTOML checks b against schema and decodes it into v. Errors start
// with the position of what is wrong ("file:LINE:COL: ").
func decodeTOML(b []byte, file string, schema *tomlField, v any) (*tomlDoc, error) {
	doc := &tomlDoc{file: file, data: b, first: make(map[string]int), elems: make(map[string][]int)}
	werr := doc.walk(schema)
	if werr != nil && !errors.Is(werr, errSyntax) {
		return nil, werr
	}
	err := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(v)
	var strict *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &strict) && len(strict.Errors) > 0:
		// The walk found unknown fields first; this is a safety net.
		e := strict.Errors[0]
		row, col := e.Position()
		return nil, fmt.Errorf("%s:%d:%d: unknown field %q", file, row, col, tomlPath(e.Key()))
	case errors.As(err, &de):
		row, col := de.Position()
		return nil, fmt.Errorf("%s:%d:%d: %s", file, row, col, strings.TrimPrefix(de.Error(), "toml: "))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", file, err)
	case werr != nil:
		return nil, fmt.Errorf("%s: %w", file, werr)
	}
	return doc, nil
}

// walk checks every key and value of d.data against schema, in document
// order, and records where keys are. It returns errSyntax if the document
// does not parse.
func (d *tomlDoc) walk(schema *tomlField) error {
	var p unstable.Parser
	p.Reset(d.data)
	var table []string
	tableSchema := schema
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			s, path, err := d.descend(schema, nil, n.Key(), true)
			if err != nil {
				return err
			}
			want := unstable.Table
			if n.Kind == unstable.ArrayTable {
				want = unstable.ArrayTable
				d.addElem(path, int(lastKey(n).Raw.Offset))
			}
			if s.kind != want {
				return d.kindError(int(lastKey(n).Raw.Offset), path, want, s)
			}
			if s.kind == unstable.ArrayTable {
				s = &tomlField{kind: unstable.Table, fields: s.fields} // the new element
			}
			table, tableSchema = path, s
		case unstable.KeyValue:
			if err := d.keyValue(tableSchema, table, n); err != nil {
				return err
			}
		}
	}
	if p.Error() != nil {
		return errSyntax
	}
	return nil
}

// keyValue checks a key/value node in table path, whose schema is s.
func (d *tomlDoc) keyValue(s *tomlField, path []string, n *unstable.Node) error {
	s, path, err := d.descend(s, path, n.Key(), false)
	if err != nil {
		return err
	}
	return d.value(s, path, n.Value(), int(lastKey(n).Raw.Offset))
}

// descend follows the key parts of it from s at path. In a table header
// (header true), arrays of tables stand for their last element.
func (d *tomlDoc) descend(s *tomlField, path []string, it unstable.Iterator, header bool) (*tomlField, []string, error) {
	path = append([]string(nil), path...)
	for it.Next() {
		k := it.Node()
		off := int(k.Raw.Offset)
		name := string(k.Data)
		switch {
		case s.kind == unstable.ArrayTable && !header || s.kind != unstable.Table && s.kind != unstable.ArrayTable:
			return nil, nil, d.kindError(off, path, unstable.Table, s)
		case s.fields != nil:
			next, ok := s.fields[name]
			if !ok {
				return nil, nil, fmt.Errorf("%s: unknown field %q", d.position(off), tomlPath(append(path, name)))
			}
			s = next
		case s.anyKey != nil:
			if s.checkKey != nil {
				if err := s.checkKey(name); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", d.position(off), err)
				}
			}
			s = s.anyKey
		default:
			return nil, nil, fmt.Errorf("%s: unknown field %q", d.position(off), tomlPath(append(path, name)))
		}
		path = append(path, name)
		if key := strings.Join(path, "\x00"); d.first[key] == 0 {
			d.first[key] = off + 1 // 0 means unset
		}
	}
	return s, path, nil
}

// value checks value node v, at path and named at offset off, against s.
func (d *tomlDoc) value(s *tomlField, path []string, v *unstable.Node, off int) error {
	switch s.kind {
	case unstable.Table:
		if v.Kind != unstable.InlineTable {
			return d.kindError(off, path, v.Kind, s)
		}
		for it := v.Children(); it.Next(); {
			if err := d.keyValue(s, path, it.Node()); err != nil {
				return err
			}
		}
	case unstable.ArrayTable:
		if v.Kind != unstable.Array {
			return d.kindError(off, path, v.Kind, s)
		}
		for it := v.Children(); it.Next(); {
			e := it.Node()
			if e.Kind != unstable.InlineTable {
				return d.kindError(off, path, e.Kind, s)
			}
			d.addElem(path, d.nodeOffset(e, off))
			if err := d.value(&tomlField{kind: unstable.Table, fields: s.fields}, path, e, off); err != nil {
				return err
			}
		}
	case unstable.Array:
		if v.Kind != unstable.Array {
			return d.kindError(off, path, v.Kind, s)
		}
		for it := v.Children(); it.Next(); {
			if e := it.Node(); e.Kind != s.elem {
				return fmt.Errorf("%s: %s: got an array of %s, want an array of %s", d.position(off),
					tomlPath(path), tomlKindName(e.Kind), tomlKindName(s.elem))
			}
		}
	case unstable.Float:
		if v.Kind != unstable.Float && v.Kind != unstable.Integer {
			return d.kindError(off, path, v.Kind, s)
		}
	default:
		if v.Kind != s.kind {
			return d.kindError(off, path, v.Kind, s)
		}
	}
	return nil
}

// nodeOffset returns the offset of the first key inside an inline table,
// or def.
func (d *tomlDoc) nodeOffset(inline *unstable.Node, def int) int {
	it := inline.Children()
	if it.Next() {
		if kv := it.Node(); kv.Kind == unstable.KeyValue {
			return int(lastKey(kv).Raw.Offset)
		}
	}
	return def
}

func (d *tomlDoc) addElem(path []string, off int) {
	key := strings.Join(path, "\x00")
	d.elems[key] = append(d.elems[key], off)
}

// kindError reports that path, named at off, holds a got where s wants
// something else.
func (d *tomlDoc) kindError(off int, path []string, got unstable.Kind, s *tomlField) error {
	want := tomlKindName(s.kind)
	if s.kind == unstable.Array {
		want = "array of " + tomlKindName(s.elem)
	}
	return fmt.Errorf("%s: %s: got %s, want %s", d.position(off), tomlPath(path), tomlKindName(got), want)
}

// tomlKindName names a TOML kind for errors.
func tomlKindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "string"
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.DateTime:
		return "date-time with offset"
	case unstable.LocalDate:
		return "local date"
	case unstable.LocalTime:
		return "local time"
	case unstable.LocalDateTime:
		return "local date-time"
	case unstable.Array:
		return "array"
	case unstable.Table, unstable.InlineTable:
		return "table"
	case unstable.ArrayTable:
		return "array of tables"
	}
	return k.String()
}

// keyParts returns the key of a Table, ArrayTable or KeyValue node.
func keyParts(n *unstable.Node) []string {
	var parts []string
	for it := n.Key(); it.Next(); {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// lastKey returns the last part of the key of a Table, ArrayTable or
// KeyValue node.
func lastKey(n *unstable.Node) *unstable.Node {
	var last *unstable.Node
	for it := n.Key(); it.Next(); {
		last = it.Node()
	}
	return last
}
