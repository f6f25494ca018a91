package manifest

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const (
	hexKey = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	b64Key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" // same key as hexKey
)

var parseTests = []struct {
	name    string
	in      string
	want    *Manifest // checked when wantErr is ""
	wantErr string    // substring of the error
}{
	{name: "minimal", in: `{"name":"acme/hello"}`, want: &Manifest{Name: "acme/hello"}},
	{
		name: "full",
		in: `{"name": "acme.io/hello-world.v2", "version": "1.2.3", "fingerprint": "0xDEADbeef00112233",
			"publishers": ["` + hexKey + `", "` + b64Key + `"],
			"build": {"command": ["go", "build", "-o", "bin/hello", "."], "dir": "src", "binary": "bin/hello", "socket": "run/hello.sock"}}`,
		want: &Manifest{
			Name: "acme.io/hello-world.v2", Version: "1.2.3", Fingerprint: "0xDEADbeef00112233",
			Publishers: []string{hexKey, b64Key},
			Build: &Build{Command: []string{"go", "build", "-o", "bin/hello", "."}, Dir: "src",
				Binary: "bin/hello", Socket: "run/hello.sock"},
		},
	},
	{name: "whitespace around", in: " \n{\"name\":\"a/b\"}\n\t", want: &Manifest{Name: "a/b"}},
	{name: "null optional fields", in: `{"name":"a/b","version":null,"publishers":null,"build":null}`, want: &Manifest{Name: "a/b"}},
	{name: "empty publishers", in: `{"name":"a/b","publishers":[],"build":null}`, want: &Manifest{Name: "a/b"}},
	{name: "fingerprint without prefix", in: `{"name":"a/b","fingerprint":"f"}`, want: &Manifest{Name: "a/b", Fingerprint: "f"}},
	{name: "name 64 chars", in: `{"name":"` + strings.Repeat("a", 64) + `/` + strings.Repeat("9", 64) + `"}`,
		want: &Manifest{Name: strings.Repeat("a", 64) + "/" + strings.Repeat("9", 64)}},

	{name: "not JSON", in: `name: acme/hello`, wantErr: "not JSON"},
	{name: "empty", in: ``, wantErr: "not JSON: unexpected end of input"},
	{name: "truncated", in: `{"name":"a/b"`, wantErr: "not JSON"},
	{name: "not an object", in: `["a/b"]`, wantErr: "not a JSON object"},
	{name: "trailing garbage", in: `{"name":"a/b"} x`, wantErr: "trailing data"},
	{name: "trailing object", in: `{"name":"a/b"}{}`, wantErr: "trailing data"},
	{name: "invalid UTF-8", in: "{\"name\":\"a/b\",\"version\":\"\xff\"}", wantErr: "not valid UTF-8"},
	{name: "oversized", in: `{"name":"a/b","version":"` + strings.Repeat("x", MaxSize) + `"}`, wantErr: "larger than 65536 bytes"},
	{name: "unknown field", in: `{"name":"a/b","nmae":"x"}`, wantErr: `unknown field "nmae"`},
	{name: "unknown build field", in: `{"name":"a/b","build":{"command":["x"],"env":{}}}`, wantErr: `unknown field "build.env"`},
	{name: "field in wrong case", in: `{"Name":"a/b"}`, wantErr: `unknown field "Name"`},
	{name: "duplicate field", in: `{"name":"a/b","name":"c/d"}`, wantErr: `duplicate field "name"`},
	{name: "too deep", in: `{"name":"a/b","version":[[[[[[[[[[1]]]]]]]]]]}`, wantErr: "version: nested too deeply"},
	{name: "wrong type", in: `{"name":42}`, wantErr: "name: got number, want string"},
	{name: "wrong type publishers", in: `{"name":"a/b","publishers":"` + hexKey + `"}`, wantErr: "publishers: got string, want array of strings"},
	{name: "wrong type build", in: `{"name":"a/b","build":["go"]}`, wantErr: "build: got array, want object"},

	{name: "name missing", in: `{"version":"1"}`, wantErr: "name: missing (want org/name"},
	{name: "name upper case", in: `{"name":"Acme/x"}`, wantErr: `name "Acme/x": invalid character 'A' in org (want org/name, lower-case letters, digits, '-' and '.')`},
	{name: "name no slash", in: `{"name":"acme"}`, wantErr: `name "acme": missing '/'`},
	{name: "name two slashes", in: `{"name":"a/b/c"}`, wantErr: `name "a/b/c": more than one '/'`},
	{name: "name empty org", in: `{"name":"/b"}`, wantErr: "empty org"},
	{name: "name empty name", in: `{"name":"a/"}`, wantErr: "empty name"},
	{name: "name too long", in: `{"name":"a/` + strings.Repeat("b", 65) + `"}`, wantErr: "name longer than 64 characters"},
	{name: "name dot-dot", in: `{"name":"../b"}`, wantErr: `org must not be ".."`},
	{name: "name underscore", in: `{"name":"a/b_c"}`, wantErr: "invalid character '_' in name"},
	{name: "name unicode", in: `{"name":"a/é"}`, wantErr: "invalid character 'é' in name"},

	{name: "fingerprint too long", in: `{"name":"a/b","fingerprint":"0x00112233445566778"}`, wantErr: `fingerprint "0x00112233445566778": more than 16 hex digits`},
	{name: "fingerprint not hex", in: `{"name":"a/b","fingerprint":"0xg"}`, wantErr: "fingerprint \"0xg\": not hex"},
	{name: "fingerprint prefix only", in: `{"name":"a/b","fingerprint":"0x"}`, wantErr: "no hex digits"},
	{name: "fingerprint upper prefix", in: `{"name":"a/b","fingerprint":"0X1"}`, wantErr: "not hex"},

	{name: "publisher short hex", in: `{"name":"a/b","publishers":["` + hexKey[:62] + `"]}`, wantErr: "publishers[0]"},
	{name: "publisher bad hex", in: `{"name":"a/b","publishers":["` + "zz" + hexKey[2:] + `"]}`, wantErr: "publishers[0]"},
	{name: "publisher base64 unpadded", in: `{"name":"a/b","publishers":["` + strings.TrimSuffix(b64Key, "=") + `"]}`, wantErr: "neither hex nor base64"},
	{name: "publisher base64 url", in: `{"name":"a/b","publishers":["` + strings.ReplaceAll(b64Key, "/", "_") + `"]}`, wantErr: "neither hex nor base64"},
	{name: "publisher base64 wrong size", in: `{"name":"a/b","publishers":["AAAA"]}`, wantErr: "publishers[0] \"AAAA\": 3 bytes"},
	{name: "publisher second bad", in: `{"name":"a/b","publishers":["` + hexKey + `",""]}`, wantErr: "publishers[1]"},
	{name: "1300 publishers", in: manyPublishers(1300), wantErr: "publishers: 1300 keys, at most 64"},
	{name: "65 publishers", in: manyPublishers(65), wantErr: "publishers: 65 keys, at most 64"},

	{name: "build without command", in: `{"name":"a/b","build":{"binary":"x"}}`, wantErr: "build.command: missing"},
	{name: "build command not array", in: `{"name":"a/b","build":{"command":"make"}}`, wantErr: "build.command: got string, want array of strings"},
	{name: "build empty command", in: `{"name":"a/b","build":{"command":["", "x"]}}`, wantErr: "build.command[0]: empty"},
	{name: "build dir absolute", in: `{"name":"a/b","build":{"command":["make"],"dir":"/etc"}}`, wantErr: `build.dir "/etc": not a relative path`},
	{name: "build binary escapes", in: `{"name":"a/b","build":{"command":["make"],"binary":"../x"}}`, wantErr: `build.binary "../x"`},
	{name: "build socket escapes", in: `{"name":"a/b","build":{"command":["make"],"socket":"a/../../s"}}`, wantErr: `build.socket`},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "manifest: invalid Cell.json: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("Parse() = %+v, want %+v", m, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// A valid manifest survives a round trip unchanged.
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-Parse(%s): %v", out, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v != %+v", m, m2)
		}
	})
}

func TestLoad(t *testing.T) {
	write := func(t *testing.T, content string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	t.Run("valid", func(t *testing.T) {
		m, err := Load(write(t, `{"name":"acme/hello","version":"1"}`))
		if err != nil || m.Name != "acme/hello" || m.Version != "1" {
			t.Fatalf("Load() = %+v, %v", m, err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		_, err := Load(dir)
		if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load() error = %v, want ErrNotFound and fs.ErrNotExist", err)
		}
		want := "manifest: no Cell.json in " + dir + " (create one, or pass --name)"
		if err.Error() != want {
			t.Errorf("Load() error = %q, want %q", err, want)
		}
	})
	t.Run("missing relative dir", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		_, err := Load(".")
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Load() error = %v, want ErrNotFound naming %s", err, dir)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		dir := write(t, `{"name":"Acme/x"}`)
		_, err := Load(dir)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) {
			t.Fatalf("Load() error = %v, want ErrInvalid naming the file", err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		_, err := Load(write(t, `{"name":"a/b","version":"`+strings.Repeat("x", 1<<20)+`"}`))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("Load() error = %v, want ErrInvalid for size", err)
		}
	})
}

// manyPublishers is a manifest listing n distinct publisher keys in base64.
func manyPublishers(n int) string {
	keys := make([]string, n)
	for i := range keys {
		var k [32]byte
		binary.BigEndian.PutUint32(k[:], uint32(i))
		keys[i] = `"` + base64.StdEncoding.EncodeToString(k[:]) + `"`
	}
	return `{"name":"a/b","publishers":[` + strings.Join(keys, ",") + `]}`
}

func TestMaxPublishers(t *testing.T) {
	m, err := Parse([]byte(manyPublishers(MaxPublishers)))
	if err != nil || len(m.Publishers) != MaxPublishers {
		t.Fatalf("%d publishers: %v", MaxPublishers, err)
	}
}
