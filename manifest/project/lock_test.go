package project

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cellnode/cellnode/manifest"
	"github.com/go-git/go-git/v5/plumbing"
)

var (
	commitA = manifest.CIDOf(plumbing.NewHash("0123456789abcdef0123456789abcdef01234567")).String()
	commitB = manifest.CIDOf(plumbing.NewHash("89abcdef0123456789abcdef0123456789abcdef")).String()
)

// goldenLock is the Lock that testdata/deps/Cell.lock holds.
func goldenLock() *Lock {
	return &Lock{Version: 1, Cells: []LockedCell{
		{
			Name: "ledger", Cell: "acme/ledger", Git: "file:///srv/git/ledger", Commit: commitB,
			Resolved: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		},
		{
			Name: "exchange", Cell: "acme/exchange", Git: "https://example.com/acme/exchange.git", Tag: "v1.0.0",
			Commit: commitA, Fingerprint: "0xdeadbeef", Publishers: []string{hexKey, b64Key},
			Endpoints: []LockedEndpoint{{Endpoint: "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWExample", LatencyMS: 12.5}, {Endpoint: "/run/cell/exchange.sock"}},
			Resolved:  time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		},
	}}
}

func TestLockGolden(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "deps", LockFile))
	if err != nil {
		t.Fatal(err)
	}
	got, err := goldenLock().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("Marshal() =\n%s\nwant (testdata/deps/%s)\n%s", got, LockFile, want)
	}
	l, err := ParseLock(want)
	if err != nil {
		t.Fatal(err)
	}
	wantLock := goldenLock()
	wantLock.Cells[0], wantLock.Cells[1] = wantLock.Cells[1], wantLock.Cells[0] // the file is sorted
	wantLock.Cells[0].Publishers = []string{b64Key, hexKey}
	if !reflect.DeepEqual(l, wantLock) {
		t.Errorf("ParseLock(golden) = %+v, want %+v", l, wantLock)
	}
}

func TestLockTamper(t *testing.T) {
	golden, err := os.ReadFile(filepath.Join("testdata", "deps", LockFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, wantErr string }{
		{"commit truncated", commitA + `"`, commitA[:len(commitA)-2] + `"`, "commit: manifest: not a git-raw commit CID"},
		{"commit codec changed", `commit = "baf4bcf`, `commit = "baf4bcg`, "commit"},
		{"commit in another base", `commit = "` + commitA + `"`, `commit = "` + "z" + commitA[1:] + `"`, "commit"},
		{"publisher changed", hexKey[:10], "zz" + hexKey[2:10], "publisher"},
		{"field renamed", "fingerprint =", "fingerprnt =", `Cell.lock:10:1: unknown field "cell.fingerprnt"`},
		{"version bumped", "version = 1", "version = 2", "Cell.lock:2:1: version 2: unsupported"},
		{"name duplicated", `name = "ledger"`, `name = "exchange"`, `Cell.lock:21:3: cell "exchange": locked twice`},
		{"resolved without offset", "resolved = 2025-03-04T05:06:07Z\n\n", "resolved = 2025-03-04T05:06:07\n\n", "cell.resolved: got local date-time, want date-time with offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(golden), tc.old) {
				t.Fatalf("golden file lacks %q", tc.old)
			}
			_, err := ParseLock([]byte(strings.Replace(string(golden), tc.old, tc.new, 1)))
			if !errors.Is(err, ErrInvalidLock) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseLock() error = %v, want ErrInvalidLock containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLockStableBytes(t *testing.T) {
	l := goldenLock()
	first, err := l.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := l.Marshal(); string(again) != string(first) {
		t.Errorf("second Marshal differs:\n%s", again)
	}
	if !reflect.DeepEqual(l, goldenLock()) {
		t.Errorf("Marshal modified the lock: %+v", l)
	}

	// Put in the other order, publishers reversed.
	other := &Lock{Version: LockVersion}
	for i := len(l.Cells) - 1; i >= 0; i-- {
		c := l.Cells[i]
		c.Publishers = append([]string(nil), c.Publishers...)
		for a, b := 0, len(c.Publishers)-1; a < b; a, b = a+1, b-1 {
			c.Publishers[a], c.Publishers[b] = c.Publishers[b], c.Publishers[a]
		}
		other.Put(c)
	}
	if got, _ := other.Marshal(); string(got) != string(first) {
		t.Errorf("Put in another order gives\n%s\nwant\n%s", got, first)
	}

	// The time zone and sub-second part of Resolved do not matter.
	other.Get("ledger").Resolved = time.Date(2025, 3, 4, 6, 6, 7, 999, time.FixedZone("CET", 3600))
	if got, _ := other.Marshal(); string(got) != string(first) {
		t.Errorf("Resolved in another zone gives\n%s\nwant\n%s", got, first)
	}
}

func TestLockGetPut(t *testing.T) {
	var l Lock
	if l.Get("x") != nil {
		t.Fatal("Get on an empty lock is not nil")
	}
	if (*Lock)(nil).Get("x") != nil {
		t.Fatal("Get on a nil lock is not nil")
	}
	l.Put(LockedCell{Name: "x", Commit: commitA})
	l.Put(LockedCell{Name: "y", Commit: commitA})
	l.Put(LockedCell{Name: "x", Commit: commitB})
	if len(l.Cells) != 2 || l.Get("x").Commit != commitB || l.Get("y").Commit != commitA {
		t.Fatalf("after Puts: %+v", l.Cells)
	}
}

var parseLockTests = []struct {
	name    string
	in      string
	want    *Lock // when wantErr is ""
	wantErr string
}{
	{name: "no cells", in: "version = 1\n", want: &Lock{Version: 1}},
	{name: "minimal cell", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\n",
		want: &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Cell: "a/x", Git: "/srv/x", Commit: commitA}}}},
	{name: "inline array, integer latency, empty lists, offset time",
		in: "version = 1\ncell = [{ name = \"x\", cell = \"a/x\", git = \"/srv/x\", commit = \"" + commitA + "\", publishers = [], " +
			"endpoints = [{ endpoint = \"e\", latency_ms = 3 }], resolved = 2025-01-02T03:04:05.9+02:00 }]\n",
		want: &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Cell: "a/x", Git: "/srv/x", Commit: commitA,
			Endpoints: []LockedEndpoint{{Endpoint: "e", LatencyMS: 3}}, Resolved: time.Date(2025, 1, 2, 1, 4, 5, 0, time.UTC)}}}},
	{name: "no commit or cell (found running locally)", in: "version = 1\n[[cell]]\nname = \"x\"\ngit = \"/srv/x\"\nendpoints = [{ endpoint = \"/run/x.sock\", latency_ms = 0.1 }]\n",
		want: &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Git: "/srv/x", Endpoints: []LockedEndpoint{{Endpoint: "/run/x.sock", LatencyMS: 0.1}}}}}},
	{name: "endpoint tables", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\n" +
		"[[cell.endpoints]]\nendpoint = \"e1\"\nlatency_ms = 1.25\n[[cell.endpoints]]\nendpoint = \"e2\"\n",
		want: &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Cell: "a/x", Git: "/srv/x", Commit: commitA,
			Endpoints: []LockedEndpoint{{Endpoint: "e1", LatencyMS: 1.25}, {Endpoint: "e2"}}}}}},

	{name: "empty", in: "", wantErr: "version 0: unsupported (want 1)"},
	{name: "version 2", in: "# future\nversion = 2\n", wantErr: "Cell.lock:2:1: version 2: unsupported (want 1)"},
	{name: "version wrong type", in: "version = \"1\"\n", wantErr: "Cell.lock:1:1: version: got string, want integer"},
	{name: "syntax error", in: "version = 1\n\n[[cell]\nname = \"x\"\n", wantErr: "Cell.lock:3:"},
	{name: "unknown top-level field", in: "version = 1\nupdated = 2025-01-01T00:00:00Z\n", wantErr: `Cell.lock:2:1: unknown field "updated"`},
	{name: "unknown cell field", in: "version = 1\n[[cell]]\nname = \"x\"\nhash = \"y\"\n", wantErr: `Cell.lock:4:1: unknown field "cell.hash"`},
	{name: "unknown endpoint field", in: "version = 1\n[[cell]]\nname = \"x\"\nendpoints = [{ endpoint = \"e\", rtt = 1.0 }]\n", wantErr: `Cell.lock:4:32: unknown field "cell.endpoints.rtt"`},
	{name: "cell as a table", in: "version = 1\n[cell]\n", wantErr: "Cell.lock:2:2: cell: got table, want array of tables"},
	{name: "publishers wrong type", in: "version = 1\n[[cell]]\npublishers = [1]\n", wantErr: "cell.publishers: got an array of integer, want an array of string"},
	{name: "missing name", in: "version = 1\n\n[[cell]]\ncell = \"a/x\"\n", wantErr: `Cell.lock:3:3: cell "": name: dependency key ""`},
	{name: "missing git", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\n", wantErr: `cell "x": git: missing`},
	{name: "bad commit", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"abc\"\n", wantErr: `commit: manifest: not a git-raw commit CID`},
	{name: "bad publisher", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\npublishers = [\"k\"]\n", wantErr: `publisher "k"`},
	{name: "negative latency", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\nendpoints = [{ endpoint = \"e\", latency_ms = -1.0 }]\n", wantErr: "endpoints[0]: latency_ms -1"},
	{name: "infinite latency", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\nendpoints = [{ endpoint = \"e\", latency_ms = inf }]\n", wantErr: "latency_ms +Inf"},
	{name: "empty endpoint", in: "version = 1\n[[cell]]\nname = \"x\"\ncell = \"a/x\"\ngit = \"/srv/x\"\ncommit = \"" + commitA + "\"\nendpoints = [{ latency_ms = 1.0 }]\n", wantErr: "endpoint missing"},
	{name: "oversized", in: "version = 1\n#" + strings.Repeat("x", 1<<20), wantErr: "larger than 1048576 bytes"},
}

func TestParseLock(t *testing.T) {
	for _, tt := range parseLockTests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ParseLock([]byte(tt.in))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidLock) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseLock() error = %v, want ErrInvalidLock containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "manifest: invalid Cell.lock: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseLock() error = %v", err)
			}
			if !reflect.DeepEqual(l, tt.want) {
				t.Errorf("ParseLock() = %+v, want %+v", l, tt.want)
			}
		})
	}
}

func FuzzParseLock(f *testing.F) {
	for _, tt := range parseLockTests {
		if len(tt.in) < 64<<10 {
			f.Add([]byte(tt.in))
		}
	}
	if golden, err := goldenLock().Marshal(); err == nil {
		f.Add(golden)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLock(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidLock) {
				t.Fatalf("error %v does not wrap ErrInvalidLock", err)
			}
			return
		}
		// What parses marshals, and what Marshal writes parses back to
		// the same bytes.
		out, err := l.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", l, err)
		}
		l2, err := ParseLock(out)
		if err != nil {
			t.Fatalf("re-ParseLock(%s): %v", out, err)
		}
		out2, err := l2.Marshal()
		if err != nil || string(out2) != string(out) {
			t.Fatalf("round trip: %s != %s (%v)", out2, out, err)
		}
	})
}

func TestMarshalInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    *Lock
		want string
	}{
		{"version 0", &Lock{}, "version 0"},
		{"duplicate name", &Lock{Version: 1, Cells: []LockedCell{goldenLock().Cells[0], goldenLock().Cells[0]}}, "locked twice"},
		{"no git", &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Cell: "a/x", Commit: commitA}}}, "git: missing"},
		{"commit not canonical", &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Git: "/x", Commit: strings.ToUpper(commitA)}}}, "not in canonical form"},
		{"year 10000", &Lock{Version: 1, Cells: []LockedCell{{Name: "x", Cell: "a/x", Git: "/x", Commit: commitA,
			Resolved: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}}, "year out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.l.Marshal(); !errors.Is(err, ErrInvalidLock) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Marshal() error = %v, want ErrInvalidLock containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadLock(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		l, err := LoadLock(t.TempDir())
		if err != nil || !reflect.DeepEqual(l, &Lock{Version: LockVersion}) {
			t.Fatalf("LoadLock() = %+v, %v; want an empty lock", l, err)
		}
	})
	t.Run("invalid names the file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, LockFile), "version = 1\nfoo = 1\n")
		_, err := LoadLock(dir)
		if want := filepath.Join(dir, LockFile) + ":2:1: unknown field"; !errors.Is(err, ErrInvalidLock) || !strings.Contains(err.Error(), want) {
			t.Fatalf("LoadLock() error = %v, want ErrInvalidLock containing %q", err, want)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, LockFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadLock(dir); err == nil {
			t.Fatal("LoadLock() of a directory succeeded")
		}
	})
}

func TestWriteLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, LockFile)
	onlyLock := func(t *testing.T) {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != LockFile {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("directory holds %v, want only %s", names, LockFile)
		}
	}

	// A long lock first, then a short one: the file is replaced whole.
	long := goldenLock()
	for _, n := range []string{"a", "b", "c", "d"} {
		c := long.Cells[1]
		c.Name = n
		long.Put(c)
	}
	if err := WriteLock(dir, long); err != nil {
		t.Fatal(err)
	}
	short := &Lock{Version: LockVersion, Cells: goldenLock().Cells[:1]}
	if err := WriteLock(dir, short); err != nil {
		t.Fatal(err)
	}
	want, _ := short.Marshal()
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(want) {
		t.Fatalf("file holds\n%s\nwant\n%s (%v)", got, want, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v; want 0644", fi.Mode(), err)
	}
	l, err := LoadLock(dir)
	if err != nil || !reflect.DeepEqual(l, short) {
		t.Errorf("LoadLock() = %+v, %v; want %+v", l, err, short)
	}
	onlyLock(t)

	// A lock that cannot be written leaves the old file as it was.
	if err := WriteLock(dir, &Lock{Version: 7}); !errors.Is(err, ErrInvalidLock) {
		t.Fatalf("WriteLock(invalid) error = %v, want ErrInvalidLock", err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(want) {
		t.Errorf("failed write changed the file to\n%s", got)
	}
	onlyLock(t)

	// So does a rename that fails (the target is a non-empty directory).
	other := t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, LockFile, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteLock(other, short); err == nil {
		t.Fatal("WriteLock over a directory succeeded")
	}
	if ents, _ := os.ReadDir(other); len(ents) != 1 {
		t.Errorf("a failed write left %d entries, want 1", len(ents))
	}

	if err := WriteLock(filepath.Join(dir, "missing"), short); err == nil {
		t.Error("WriteLock into a missing directory succeeded")
	}
}

func ExampleLock_Marshal() {
	l := &Lock{Version: LockVersion}
	l.Put(LockedCell{
		Name:     "ledger",
		Cell:     "acme/ledger",
		Git:      "file:///srv/git/ledger",
		Tag:      "v2.1.0",
		Commit:   manifest.CIDOf(plumbing.NewHash("89abcdef0123456789abcdef0123456789abcdef")).String(),
		Resolved: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
	})
	b, err := l.Marshal()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(string(b))
	// Output:
	// # Cell.lock: written by cellnode resolve; do not edit by hand.
	// version = 1
	//
	// [[cell]]
	// name = "ledger"
	// cell = "acme/ledger"
	// git = "file:///srv/git/ledger"
	// tag = "v2.1.0"
	// commit = "baf4bcfejvpg66ajdivtytk6n54asgrlhrgv433y"
	// resolved = 2025-03-04T05:06:07Z
}
