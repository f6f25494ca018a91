package project

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const depsExample = `[package]
name = "acme/trader"     # the cell's own name (optional)
version = "0.1.0"

[cell]
# dependencies: local name = { ... }
exchange = { git = "https://example.com/acme/exchange.git", tag = "v1.0.0", max_latency_ms = 50, auto_spawn = true }
ledger = { git = "file:///srv/git/ledger", cell = "acme/ledger" }
`

var parseDepsTests = []struct {
	name    string
	in      string
	want    *Deps // checked when wantErr is ""
	wantErr string
}{
	{name: "example", in: depsExample, want: &Deps{
		Package: Package{Name: "acme/trader", Version: "0.1.0"},
		Cells: map[string]Dep{
			"exchange": {Git: "https://example.com/acme/exchange.git", Tag: "v1.0.0", MaxLatencyMS: 50, AutoSpawn: true},
			"ledger":   {Git: "file:///srv/git/ledger", Cell: "acme/ledger"},
		},
	}},
	{name: "empty", in: "", want: &Deps{Cells: map[string]Dep{}}},
	{name: "comments only", in: "# nothing yet\n\n", want: &Deps{Cells: map[string]Dep{}}},
	{name: "sub-table", in: "[cell.ledger]\ngit = \"../ledger\"\ntag = \"release/2\"\n",
		want: &Deps{Cells: map[string]Dep{"ledger": {Git: "../ledger", Tag: "release/2"}}}},
	{name: "dotted keys", in: "[cell]\nx.git = \"/srv/x\"\nx.auto_spawn = false\n",
		want: &Deps{Cells: map[string]Dep{"x": {Git: "/srv/x"}}}},
	{name: "quoted key with dot", in: "[cell]\n\"a.b_c-d\" = { git = 'ssh://git@h/x' }\n",
		want: &Deps{Cells: map[string]Dep{"a.b_c-d": {Git: "ssh://git@h/x"}}}},
	{name: "multi-line inline table", in: "[cell]\nx = {\n  git = \"/srv/x\",\n}\n",
		want: &Deps{Cells: map[string]Dep{"x": {Git: "/srv/x"}}}},
	{name: "CRLF", in: "[cell]\r\nx = { git = \"/srv/x\" }\r\n", want: &Deps{Cells: map[string]Dep{"x": {Git: "/srv/x"}}}},

	{name: "syntax error", in: "[package]\nname = \"acme/x\"\n\n[cell]\nx = { git = \"/srv/x\" \n", wantErr: "Cell.toml:5:"},
	{name: "unterminated string", in: "[package]\nname = \"acme/x\n", wantErr: "Cell.toml:2:"},
	{name: "duplicate key", in: "[cell]\nx = { git = \"a\" }\nx = { git = \"b\" }\n", wantErr: "Cell.toml:3:1: key x is already defined"},
	{name: "duplicate table", in: "[cell]\n[cell]\n", wantErr: "Cell.toml:2:"},
	{name: "unknown top-level field", in: "[package]\nname = \"a/b\"\n\n[dependencies]\n", wantErr: `Cell.toml:4:2: unknown field "dependencies"`},
	{name: "unknown top-level key", in: "# c\nedition = 2024\n", wantErr: `Cell.toml:2:1: unknown field "edition"`},
	{name: "unknown package field", in: "[package]\nname = \"a/b\"\nauthors = []\n", wantErr: `Cell.toml:3:1: unknown field "package.authors"`},
	{name: "field in wrong case", in: "[package]\nName = \"a/b\"\n", wantErr: `Cell.toml:2:1: unknown field "package.Name"`},
	{name: "unknown dependency field", in: "[cell]\n\nx = { git = \"/srv/x\", branch = \"main\" }\n", wantErr: `Cell.toml:3:23: unknown field "cell.x.branch"`},
	{name: "unknown field in sub-table", in: "[cell.x]\ngit = \"/srv/x\"\nGit = \"/srv/y\"\n", wantErr: `Cell.toml:3:1: unknown field "cell.x.Git"`},
	{name: "sub-sub-table", in: "[cell.x]\ngit = \"/srv/x\"\n[cell.x.env]\n", wantErr: `Cell.toml:3:9: unknown field "cell.x.env"`},
	{name: "array of tables", in: "[[cell]]\nx = 1\n", wantErr: "Cell.toml:1:3: cell: got array of tables, want table"},
	{name: "dependency not a table", in: "[cell]\nx = \"/srv/x\"\n", wantErr: "Cell.toml:2:1: cell.x: got string, want table"},
	{name: "latency wrong type", in: "[cell]\nx = { git = \"/srv/x\", max_latency_ms = \"50\" }\n", wantErr: "Cell.toml:2:23: cell.x.max_latency_ms: got string, want integer"},
	{name: "latency float", in: "[cell]\nx = { git = \"/srv/x\", max_latency_ms = 1.5 }\n", wantErr: "cell.x.max_latency_ms: got float, want integer"},
	{name: "latency overflows", in: "[cell]\nx = { git = \"/srv/x\", max_latency_ms = 99999999999999999999 }\n", wantErr: "Cell.toml:2:"},
	{name: "auto_spawn wrong type", in: "[cell]\nx = { git = \"/srv/x\", auto_spawn = \"yes\" }\n", wantErr: "cell.x.auto_spawn: got string, want boolean"},
	{name: "git wrong type", in: "[cell.x]\ngit.url = \"/srv/x\"\n", wantErr: "Cell.toml:2:5: cell.x.git: got table, want string"},

	{name: "bad key upper case", in: "[cell]\nLedger = { git = \"/srv/x\" }\n", wantErr: `Cell.toml:2:1: dependency key "Ledger": invalid character 'L' at 0`},
	{name: "bad key leading dot", in: "[cell]\n\".x\" = { git = \"/srv/x\" }\n", wantErr: `dependency key ".x": invalid character '.' at 0`},
	{name: "bad key slash", in: "[cell.\"a/b\"]\ngit = \"/srv/x\"\n", wantErr: `Cell.toml:1:7: dependency key "a/b": invalid character '/'`},
	{name: "bad key too long", in: "[cell]\n" + strings.Repeat("k", 65) + " = { git = \"/srv/x\" }\n", wantErr: "want 1 to 64 characters"},
	{name: "bad key empty", in: "[cell]\n\"\" = { git = \"/srv/x\" }\n", wantErr: `dependency key ""`},
	{name: "missing git", in: "[cell]\n\nledger = { cell = \"acme/ledger\" }\n", wantErr: "Cell.toml:3:1: cell.ledger: missing git"},
	{name: "empty git", in: "[cell.ledger]\ngit = \"\"\n", wantErr: "Cell.toml:1:7: cell.ledger: missing git"},
	{name: "git option", in: "[cell]\nx = { git = \"--upload-pack=evil\" }\n", wantErr: "cell.x: git \"--upload-pack=evil\": starts with '-'"},
	{name: "git control character", in: "[cell]\nx = { git = \"/srv/x\\n\" }\n", wantErr: "control character"},
	{name: "bad tag", in: "[cell]\nx = { git = \"/srv/x\", tag = \"v1..2\" }\n", wantErr: `Cell.toml:2:23: cell.x: tag "v1..2": not a valid git tag or branch name`},
	{name: "bad cell name", in: "[cell]\nx = { git = \"/srv/x\" }\ny = { git = \"/srv/y\", cell = \"Acme/y\" }\n",
		wantErr: `Cell.toml:3:23: cell.y: cell "Acme/y": invalid character 'A' in org`},
	{name: "cell name without org", in: "[cell]\nx = { git = \"/srv/x\", cell = \"x\" }\n", wantErr: `cell "x": missing '/'`},
	{name: "bad package name", in: "[package]\nversion = \"1\"\nname = \"trader\"\n", wantErr: `Cell.toml:3:1: package.name "trader": missing '/'`},
	{name: "negative latency", in: "[cell]\nx = { git = \"/srv/x\", max_latency_ms = -1 }\n", wantErr: "Cell.toml:2:23: cell.x: max_latency_ms -1: negative"},
	{name: "oversized", in: "# " + strings.Repeat("x", 1<<20) + "\n", wantErr: "larger than 1048576 bytes"},
}

func TestParseDeps(t *testing.T) {
	for _, tt := range parseDepsTests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseDeps([]byte(tt.in))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidDeps) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDeps() error = %v, want ErrInvalidDeps containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "manifest: invalid Cell.toml: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDeps() error = %v", err)
			}
			if !reflect.DeepEqual(d, tt.want) {
				t.Errorf("ParseDeps() = %+v, want %+v", d, tt.want)
			}
		})
	}
}

func FuzzParseDeps(f *testing.F) {
	for _, tt := range parseDepsTests {
		if len(tt.in) < 64<<10 { // minimizing huge inputs takes minutes
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDeps(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidDeps) {
				t.Fatalf("error %v does not wrap ErrInvalidDeps", err)
			}
			return
		}
		// Writing every dependency again with AddDep gives a file that
		// parses to the same; AddDep fails only for forms it cannot edit.
		out := []byte(nil)
		if d.Package != (Package{}) {
			out = []byte("[package]\nname = " + tomlString(d.Package.Name) + "\nversion = " + tomlString(d.Package.Version) + "\n")
		}
		for k, dep := range d.Cells {
			if out, err = AddDep(out, k, dep); err != nil {
				t.Fatalf("AddDep(%q, %+v): %v", k, dep, err)
			}
			// Editing the original in place keeps it valid.
			if _, err := AddDep(b, k, dep); err != nil && !errors.Is(err, ErrDepsNotEditable) {
				t.Fatalf("AddDep(original, %q): %v", k, err)
			}
		}
		d2, err := ParseDeps(out)
		if err != nil {
			t.Fatalf("re-ParseDeps(%q): %v", out, err)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip: %+v != %+v", d, d2)
		}
	})
}

func TestLoadDeps(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, DepsFile), depsExample)
		d, err := LoadDeps(dir)
		if err != nil || len(d.Cells) != 2 || d.Package.Name != "acme/trader" {
			t.Fatalf("LoadDeps() = %+v, %v", d, err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		_, err := LoadDeps(dir)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Join(dir, DepsFile)) {
			t.Fatalf("LoadDeps() error = %v, want fs.ErrNotExist naming the file", err)
		}
	})
	t.Run("invalid names the file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, DepsFile), "[cell]\nx = { git = \"/srv/x\", tga = \"v1\" }\n")
		_, err := LoadDeps(dir)
		want := filepath.Join(dir, DepsFile) + `:2:23: unknown field "cell.x.tga"`
		if !errors.Is(err, ErrInvalidDeps) || !strings.Contains(err.Error(), want) {
			t.Fatalf("LoadDeps() error = %v, want ErrInvalidDeps containing %q", err, want)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, DepsFile), "#"+strings.Repeat("x", 2<<20))
		if _, err := LoadDeps(dir); !errors.Is(err, ErrInvalidDeps) {
			t.Fatalf("LoadDeps() error = %v, want ErrInvalidDeps", err)
		}
	})
}

var addDepTests = []struct {
	name    string
	in      string
	key     string
	dep     Dep
	want    string // when wantErr is nil
	wantErr error
	errText string
}{
	{
		name: "add to the example, keeping comments",
		in:   depsExample,
		key:  "router",
		dep:  Dep{Git: "https://example.com/acme/router.git", Tag: "v2", Cell: "acme/router", MaxLatencyMS: 5, AutoSpawn: true},
		want: strings.Replace(depsExample, "cell = \"acme/ledger\" }\n",
			"cell = \"acme/ledger\" }\nrouter = { git = \"https://example.com/acme/router.git\", tag = \"v2\", cell = \"acme/router\", max_latency_ms = 5, auto_spawn = true }\n", 1),
	},
	{
		name: "replace a line, keeping its comment and indentation",
		in:   "# deps\n[cell]\n  exchange = { git = \"/old\", auto_spawn = true } # the exchange\nledger = { git = \"/l\" }\n\n[package]\nname = \"a/b\"\n",
		key:  "exchange",
		dep:  Dep{Git: "/new", Tag: "v3"},
		want: "# deps\n[cell]\n  exchange = { git = \"/new\", tag = \"v3\" } # the exchange\nledger = { git = \"/l\" }\n\n[package]\nname = \"a/b\"\n",
	},
	{
		name: "replace a multi-line inline table",
		in:   "[cell]\nx = {\n  git = \"/old\",\n}\n# end\n",
		key:  "x",
		dep:  Dep{Git: "/new"},
		want: "[cell]\nx = { git = \"/new\" }\n# end\n",
	},
	{
		name: "replace a quoted key",
		in:   "[cell]\n\"x\" = { git = \"/old\" }\n",
		key:  "x",
		dep:  Dep{Git: "/new"},
		want: "[cell]\nx = { git = \"/new\" }\n",
	},
	{
		name: "insert before the next section, after a trailing comment",
		in:   "[cell]\na = { git = \"/a\" } # first\n\n# more later\n[package]\nname = \"a/b\"\n",
		key:  "b",
		dep:  Dep{Git: "/b"},
		want: "[cell]\na = { git = \"/a\" } # first\nb = { git = \"/b\" }\n\n# more later\n[package]\nname = \"a/b\"\n",
	},
	{
		name: "empty [cell] section",
		in:   "[package]\nname = \"a/b\"\n\n[cell] # none yet\n\n# trailing comment\n",
		key:  "x",
		dep:  Dep{Git: "/x"},
		want: "[package]\nname = \"a/b\"\n\n[cell] # none yet\nx = { git = \"/x\" }\n\n# trailing comment\n",
	},
	{
		name: "[cell] header at end without newline",
		in:   "[cell]",
		key:  "x",
		dep:  Dep{Git: "/x"},
		want: "[cell]\nx = { git = \"/x\" }\n",
	},
	{
		name: "last line without newline",
		in:   "[cell]\na = { git = \"/a\" }",
		key:  "b",
		dep:  Dep{Git: "/b"},
		want: "[cell]\na = { git = \"/a\" }\nb = { git = \"/b\" }\n",
	},
	{
		name: "create [cell] section",
		in:   "# my cell\n[package]\nname = \"acme/trader\"\n",
		key:  "ledger",
		dep:  Dep{Git: "file:///srv/git/ledger"},
		want: "# my cell\n[package]\nname = \"acme/trader\"\n\n[cell]\nledger = { git = \"file:///srv/git/ledger\" }\n",
	},
	{
		name: "create [cell] section in empty file",
		in:   "",
		key:  "ledger",
		dep:  Dep{Git: "/srv/ledger", MaxLatencyMS: 10},
		want: "[cell]\nledger = { git = \"/srv/ledger\", max_latency_ms = 10 }\n",
	},
	{
		name: "create [cell] after [cell.x] tables",
		in:   "[cell.x]\ngit = \"/x\"\n",
		key:  "y",
		dep:  Dep{Git: "/y"},
		want: "[cell.x]\ngit = \"/x\"\n\n[cell]\ny = { git = \"/y\" }\n",
	},
	{
		name: "CRLF file",
		in:   "[cell]\r\na = { git = \"/a\" }\r\n",
		key:  "b",
		dep:  Dep{Git: "/b"},
		want: "[cell]\r\na = { git = \"/a\" }\r\nb = { git = \"/b\" }\r\n",
	},
	{
		name: "quoted and escaped strings",
		in:   "[cell]\n",
		key:  "my.dep",
		dep:  Dep{Git: `C:\srv\my "repos"\é`, Tag: "r\u00e9lease"},
		want: "[cell]\n\"my.dep\" = { git = \"C:\\\\srv\\\\my \\\"repos\\\"\\\\é\", tag = \"r\u00e9lease\" }\n",
	},

	{name: "sub-table", in: "[cell.x]\ngit = \"/x\"\n", key: "x", dep: Dep{Git: "/y"},
		wantErr: ErrDepsNotEditable, errText: `dependency "x" is written as a [cell.x] table`},
	{name: "dotted keys", in: "[cell]\nx.git = \"/x\"\n", key: "x", dep: Dep{Git: "/y"},
		wantErr: ErrDepsNotEditable, errText: "dotted keys"},
	{name: "root dotted cell", in: "cell.x = { git = \"/x\" }\n", key: "y", dep: Dep{Git: "/y"},
		wantErr: ErrDepsNotEditable, errText: "rather than a [cell] section"},
	{name: "invalid input", in: "[cell]\nx = 1\n", key: "y", dep: Dep{Git: "/y"}, wantErr: ErrInvalidDeps, errText: "Cell.toml:2:1"},
	{name: "invalid key", in: "", key: "Y", dep: Dep{Git: "/y"}, wantErr: ErrInvalidDeps, errText: `dependency key "Y"`},
	{name: "missing git", in: "", key: "y", dep: Dep{Tag: "v1"}, wantErr: ErrInvalidDeps, errText: "cell.y: missing git"},
	{name: "negative latency", in: "", key: "y", dep: Dep{Git: "/y", MaxLatencyMS: -5}, wantErr: ErrInvalidDeps, errText: "negative"},
	{name: "bad cell", in: "", key: "y", dep: Dep{Git: "/y", Cell: "y"}, wantErr: ErrInvalidDeps, errText: `cell "y"`},
	{name: "newline in git", in: "", key: "y", dep: Dep{Git: "/y\n[x]"}, wantErr: ErrInvalidDeps, errText: "control character"},
}

func TestAddDep(t *testing.T) {
	for _, tt := range addDepTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AddDep([]byte(tt.in), tt.key, tt.dep)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("AddDep() error = %v, want %v containing %q", err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("AddDep() error = %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("AddDep() =\n%s\nwant\n%s", got, tt.want)
			}
			d, err := ParseDeps(got)
			if err != nil || !reflect.DeepEqual(d.Cells[tt.key], tt.dep) {
				t.Errorf("result parses to %+v, %v; want %+v", d, err, tt.dep)
			}
		})
	}
}

func TestAddDepIdempotent(t *testing.T) {
	dep := Dep{Git: "https://example.com/acme/exchange.git", Tag: "v1.0.0", MaxLatencyMS: 50, AutoSpawn: true}
	got, err := AddDep([]byte(depsExample), "exchange", dep)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != depsExample {
		t.Errorf("re-adding an identical dependency changed the file:\n%s", got)
	}
}

func TestDepsFileExample(t *testing.T) {
	// The documented example file parses, and stays as it is in testdata.
	b, err := os.ReadFile(filepath.Join("testdata", "deps", DepsFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != depsExample {
		t.Errorf("testdata/deps/%s differs from depsExample", DepsFile)
	}
	if _, err := LoadDeps(filepath.Join("testdata", "deps")); err != nil {
		t.Fatal(err)
	}
}

func ExampleAddDep() {
	in := []byte(`[package]
name = "acme/trader"

[cell]
# prices
exchange = { git = "https://example.com/acme/exchange.git" }
`)
	out, err := AddDep(in, "ledger", Dep{Git: "file:///srv/git/ledger", Tag: "v2.1.0", AutoSpawn: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(string(out))
	// Output:
	// [package]
	// name = "acme/trader"
	//
	// [cell]
	// # prices
	// exchange = { git = "https://example.com/acme/exchange.git" }
	// ledger = { git = "file:///srv/git/ledger", tag = "v2.1.0", auto_spawn = true }
}
